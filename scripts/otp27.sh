#!/usr/bin/env bash
# otp27.sh: real OTP 27 / Elixir 1.18 nodes beside the host's OTP 25 ones.
#
# Owns one Debian trixie chroot (default /var/cache/cluster_helper/otp27-trixie,
# env OTP27_ROOT) and the mounts inside it. It never touches the repository:
# the repo is only bind-mounted, on request, at its own path. Nodes in the
# chroot share the host's network namespace and the host's epmd, so they
# cluster with host nodes as if both were installed side by side.
# Usage and caveats: scripts/OTP27.md; `scripts/otp27.sh help`.
set -euo pipefail

SUITE=trixie
PKGS=(erlang-nox elixir)
# Bump when the chroot's recipe changes: a stamp that differs means "rebuild".
STAMP_KEY="otp27-chroot v1 suite=$SUITE pkgs=${PKGS[*]}"

ROOT=$(realpath -m "${OTP27_ROOT:-/var/cache/cluster_helper/otp27-trixie}")
STAMP="$ROOT/.otp27-ready"
LOCK="$ROOT.lock"
SELF=$(realpath "${BASH_SOURCE[0]}")
CLEAN_ENV=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)
OWN_PROC=0 OWN_MOUNT=0 OWN_EPMD=0 PID27="" PID25="" LOG27=""

# A signal still runs the EXIT traps that unmount and kill what we started.
trap 'exit 130' INT TERM

say() { printf 'otp27: %s\n' "$*" >&2; }

die() {
    printf '\n*** otp27.sh: ERROR ***\n*** %s\n\n' "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
usage: scripts/otp27.sh COMMAND [ARGS...]

  setup                  build the trixie chroot once (idempotent, stamp file)
  mount                  mount /proc, /dev, /tmp (and OTP27_BIND dirs) in it
  umount                 unmount everything under the chroot (safe if none)
  run CMD [ARGS...]      exec CMD in the chroot with a clean env; when
                         backgrounded, \$! is CMD's own PID
  erl NAME COOKIE [ARGS] exec an OTP 27 node: erl -name NAME -setcookie COOKIE
                         -noshell ARGS (NAME without @ gets @127.0.0.1)
  version                print the chroot's OTP release and Elixir version
  check                  self-test: OTP 25 host node erpc-calls an OTP 27 node

env: OTP27_ROOT    chroot dir (now $ROOT)
     OTP27_MIRROR  Debian mirror (default: the host's own apt sources)
     OTP27_BIND    ':'-separated host dirs bind-mounted at the same path
     OTP27_SHARE_TMP=0  keep the chroot's own /tmp (default: host /tmp shared)
     OTP27_CWD     directory to run in (default: \$PWD if it is bind-mounted
                   in the chroot, else /)
EOF
}

# The clean-env chroot call; env's options must precede its assignments.
in_chroot() {
    chroot "$ROOT" /usr/bin/env -i "${CLEAN_ENV[@]}" "$@"
}

need_root() {
    [[ $(id -u) == 0 ]] || die "must run as root (chroot, mount and debootstrap need it)"
}

# One lock for setup, mount and umount: concurrent test runs share the
# chroot. Held until this process exits; `run`/`erl` never take it (they exec
# long-lived nodes that would hold it).
LOCKED=0
take_lock() {
    if [[ $LOCKED == 1 ]]; then return; fi
    mkdir -p "$(dirname "$ROOT")"
    exec 9>"$LOCK"
    flock 9
    LOCKED=1
}

is_ready() {
    [[ -f $STAMP && $(head -n1 "$STAMP") == "$STAMP_KEY" ]]
}

need_ready() {
    is_ready || die "no finished chroot at $ROOT: run 'scripts/otp27.sh setup' first"
}

# Mount points at or under ROOT, deepest first (mountinfo escapes blanks as \040).
mounts_under_root() {
    awk -v root="$ROOT" '{
        p = $5
        while (match(p, /\\[0-7][0-7][0-7]/)) {
            c = sprintf("%c", (substr(p, RSTART + 1, 1) * 64) + (substr(p, RSTART + 2, 1) * 8) + substr(p, RSTART + 3, 1))
            p = substr(p, 1, RSTART - 1) c substr(p, RSTART + 4)
        }
        if (p == root || index(p, root "/") == 1) print length(p) "\t" p
    }' /proc/self/mountinfo | sort -rn | cut -f2-
}

is_mounted() {
    mounts_under_root | grep -qxF "$1"
}

# ---------------------------------------------------------------- mirror

# Every "deb" URI in the host's apt sources, one-line and deb822 formats alike.
host_apt_uris() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -r $f ]] || continue
        awk '$1 == "deb" {
            i = 2
            if ($2 ~ /^\[/) { while (i < NF && $i !~ /\]$/) i++; i++ }
            print $i
        }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [[ -r $f ]] || continue
        awk 'BEGIN { RS = ""; FS = "\n" }
        {
            types = ""; uris = ""; enabled = "yes"
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^[ \t]*#/ || index($i, ":") == 0) continue
                key = tolower(substr($i, 1, index($i, ":") - 1))
                val = substr($i, index($i, ":") + 1)
                if (key == "types") types = val
                else if (key == "uris") uris = val
                else if (key == "enabled") enabled = tolower(val)
            }
            if (types ~ /(^|[ \t])deb([ \t]|$)/ && enabled !~ /no/) {
                n = split(uris, u, /[ \t]+/)
                for (j = 1; j <= n; j++) if (u[j] != "") print u[j]
            }
        }' "$f"
    done
}

url_ok() {
    if command -v curl >/dev/null; then
        curl -fsS -o /dev/null --max-time 20 "$1"
    elif command -v wget >/dev/null; then
        wget -q -O /dev/null --timeout=20 "$1"
    else
        return 0 # nothing to probe with: debootstrap will tell
    fi
}

# The first host mirror (".../debian" first, never a security archive) that
# serves trixie's Release file.
pick_mirror() {
    if [[ -n ${OTP27_MIRROR:-} ]]; then
        url_ok "${OTP27_MIRROR%/}/dists/$SUITE/Release" ||
            die "OTP27_MIRROR=$OTP27_MIRROR does not serve dists/$SUITE/Release"
        echo "${OTP27_MIRROR%/}"
        return
    fi
    local uris u
    uris=$(host_apt_uris | sed 's:/*$::' | grep -E '^(https?|file)://' | grep -v -- '-security' | awk '!seen[$0]++' || true)
    [[ -n $uris ]] || die "no Debian mirror found in /etc/apt/sources.list{,.d/}; set OTP27_MIRROR"
    for u in $(grep -E '/debian$' <<<"$uris"; grep -vE '/debian$' <<<"$uris"); do
        if url_ok "$u/dists/$SUITE/Release"; then
            echo "$u"
            return
        fi
        say "mirror $u: no $SUITE Release file, trying the next one"
    done
    die "no host apt mirror serves Debian $SUITE (tried: ${uris//$'\n'/ }); set OTP27_MIRROR or check the network"
}

# ---------------------------------------------------------------- setup

sync_etc() {
    cp /etc/hosts "$ROOT/etc/hosts"
    if [[ -r /etc/resolv.conf ]]; then cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"; fi
}

cmd_setup() {
    need_root
    take_lock # two test runs may set up at once: one builds, one waits
    if is_ready; then
        sync_etc
        say "chroot ready at $ROOT ($(sed -n 2p "$STAMP"))"
        return
    fi
    local t0=$SECONDS
    if [[ -e $ROOT ]]; then
        say "$ROOT exists without a valid stamp: rebuilding it from scratch"
        [[ $ROOT == /*/* && $ROOT != /work/* ]] || die "refusing to delete suspicious OTP27_ROOT=$ROOT"
        cmd_umount
        [[ -z $(mounts_under_root) ]] || die "still mounted under $ROOT; not deleting it"
        rm -rf --one-file-system "$ROOT"
    fi
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap"
        apt-get install -y debootstrap >&2 ||
            { apt-get update >&2 && apt-get install -y debootstrap >&2; } ||
            die "cannot install debootstrap with apt-get"
    fi
    local mirror
    mirror=$(pick_mirror)
    say "debootstrap --variant=minbase $SUITE $ROOT $mirror"
    debootstrap --variant=minbase "$SUITE" "$ROOT" "$mirror" >&2 ||
        die "debootstrap of $SUITE from $mirror failed (see above); $ROOT is left unstamped and will be rebuilt"
    sync_etc
    # No daemons inside (erlang's epmd must stay the host's), no date checks
    # (the host's apt disables them too: its mirrors may be snapshots).
    printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
    chmod 755 "$ROOT/usr/sbin/policy-rc.d"
    printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
        >"$ROOT/etc/apt/apt.conf.d/99otp27"

    trap 'trap "" INT TERM; if [[ $OWN_PROC == 1 ]]; then umount "$ROOT/proc"; fi' EXIT
    if ! is_mounted "$ROOT/proc"; then
        mount -t proc proc "$ROOT/proc"
        OWN_PROC=1
    fi
    say "installing ${PKGS[*]} in the chroot"
    in_chroot DEBIAN_FRONTEND=noninteractive sh -ec "
        apt-get update
        apt-get install -y --no-install-recommends ${PKGS[*]}
        apt-get clean
        rm -rf /var/lib/apt/lists/*" >&2 ||
        die "apt-get in the chroot failed (mirror $mirror); $ROOT is left unstamped and will be rebuilt"

    local otp ex
    otp=$(in_chroot erl -noshell -eval \
        'io:format("~s", [erlang:system_info(otp_release)]), halt().') ||
        die "erl does not start in the chroot"
    [[ $otp == 27 ]] || die "chroot has OTP '$otp', expected 27"
    ex=$(in_chroot elixir -e 'IO.write(System.version())') ||
        die "elixir does not start in the chroot"
    in_chroot mix --version >/dev/null || die "mix does not start in the chroot"

    if [[ $OWN_PROC == 1 ]]; then umount "$ROOT/proc"; fi
    OWN_PROC=0
    printf '%s\nOTP %s, Elixir %s, mirror %s, built %s\n' \
        "$STAMP_KEY" "$otp" "$ex" "$mirror" "$(date -u +%FT%TZ)" >"$STAMP"
    say "chroot ready at $ROOT: OTP $otp, Elixir $ex ($((SECONDS - t0)) s, $(du -sxh "$ROOT" | cut -f1))"
}

# ---------------------------------------------------------------- mounts

bind_dir() { # host dir -> same path inside
    local src=$1 dst="$ROOT$1"
    [[ -d $src ]] || die "cannot bind $src: not a directory"
    mkdir -p "$dst"
    is_mounted "$dst" || mount --bind "$src" "$dst"
}

cmd_mount() {
    need_root
    take_lock
    need_ready
    sync_etc
    is_mounted "$ROOT/proc" || mount -t proc proc "$ROOT/proc"
    bind_dir /dev # /dev/null, /dev/urandom, /dev/shm as the host has them
    [[ ${OTP27_SHARE_TMP:-1} == 0 ]] || bind_dir /tmp
    local d
    IFS=: read -ra dirs <<<"${OTP27_BIND:-}"
    for d in "${dirs[@]}"; do
        [[ -n $d ]] || continue
        d=$(realpath "$d")
        [[ $d != / ]] || die "cannot bind / into the chroot"
        bind_dir "$d"
    done
    say "mounted in $ROOT: $(mounts_under_root | sed "s:^$ROOT::" | tr '\n' ' ')"
}

cmd_umount() {
    need_root
    take_lock
    local m
    while IFS= read -r m; do
        [[ -n $m && $m != "$ROOT" ]] || continue
        umount "$m" 2>/dev/null || {
            say "$m is busy (a chroot process still runs?): lazy unmount"
            umount -l "$m"
        }
    done < <(mounts_under_root)
}

# ---------------------------------------------------------------- run

# exec all the way down (script -> chroot -> env -> CMD), so a caller's
# `scripts/otp27.sh run CMD &` has $! == CMD's PID (for erl: beam.smp's).
cmd_run() {
    [[ $# -gt 0 ]] || die "run: no command given"
    need_root
    need_ready
    is_mounted "$ROOT/proc" || die "/proc is not mounted in $ROOT: run 'scripts/otp27.sh mount' first"
    # Default cwd: the caller's, when it is visible in the chroot (under a
    # bind mount such as OTP27_BIND or /tmp), else /.
    local cwd=${OTP27_CWD:-} m
    if [[ -z $cwd ]]; then
        cwd=/
        while IFS= read -r m; do
            if [[ -d $ROOT$PWD && ($ROOT$PWD == "$m" || $ROOT$PWD == "$m"/*) ]]; then cwd=$PWD; fi
        done < <(mounts_under_root)
    fi
    exec chroot "$ROOT" /usr/bin/env -i --chdir="$cwd" "${CLEAN_ENV[@]}" "$@"
}

epmd_up() { epmd -names >/dev/null 2>&1; }

# The host's epmd serves both OTPs; start it before any chroot node, or the
# first node starts the chroot's own epmd (then confined to the chroot).
ensure_epmd() {
    epmd_up && return
    epmd -daemon
    for _ in $(seq 50); do
        epmd_up && return
        sleep 0.1
    done
    die "host epmd does not answer after 'epmd -daemon'"
}

cmd_erl() {
    [[ $# -ge 2 ]] || die "usage: scripts/otp27.sh erl NAME COOKIE [erl args...]"
    local name=$1 cookie=$2
    shift 2
    [[ $name == *@* ]] || name="$name@127.0.0.1"
    ensure_epmd
    cmd_run erl -name "$name" -setcookie "$cookie" -noshell "$@"
}

cmd_version() {
    need_ready
    local own=0
    if ! is_mounted "$ROOT/proc"; then
        need_root
        mount -t proc proc "$ROOT/proc"
        own=1
    fi
    in_chroot erl -noshell -eval \
        'io:format("OTP ~s (erts ~s)~n", [erlang:system_info(otp_release), erlang:system_info(version)]), halt().'
    in_chroot elixir -e 'IO.puts("Elixir " <> System.version())'
    if [[ $own == 1 ]]; then umount "$ROOT/proc"; fi
}

# ---------------------------------------------------------------- check

check_cleanup() {
    local p
    trap '' INT TERM # a second signal must not cut the cleanup short
    for p in $PID27 $PID25; do kill "$p" 2>/dev/null || true; done
    for p in $PID27 $PID25; do wait "$p" 2>/dev/null || true; done
    # Unmount only what this check mounted: other tests may share the chroot.
    if [[ $OWN_MOUNT == 1 ]]; then cmd_umount; fi
    if [[ -n $LOG27 ]]; then rm -f "$LOG27"; fi
    # epmd refuses -kill while any node is registered: ours may take a moment
    # to drop out; someone else's keeps it alive, as it should.
    if [[ $OWN_EPMD == 1 ]]; then
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            epmd -kill 2>/dev/null | grep -q '^Killed' && break
            sleep 0.2
        done
    fi
}

cmd_check() {
    need_root
    local t0=$SECONDS rc=0 exe waited=0
    "$SELF" setup

    epmd_up || OWN_EPMD=1
    ensure_epmd
    is_mounted "$ROOT/proc" || OWN_MOUNT=1
    trap check_cleanup EXIT
    "$SELF" mount

    local cookie="otp27check$RANDOM$RANDOM" n27="otp27check$$@127.0.0.1" n25="otp25check$$@127.0.0.1"
    LOG27=$(mktemp /tmp/otp27check.XXXXXX)
    "$SELF" erl "$n27" "$cookie" >"$LOG27" 2>&1 &
    PID27=$!

    # The OTP 25 host node waits for the OTP 27 node, then asks its release.
    erl -name "$n25" -setcookie "$cookie" -noshell -eval "
        N = '$n27',
        Wait = fun W(0) -> pang; W(I) ->
            case net_adm:ping(N) of pong -> pong; pang -> timer:sleep(200), W(I - 1) end end,
        case Wait(150) of
            pong ->
                R = erpc:call(N, erlang, system_info, [otp_release], 5000),
                io:format(\"otp27: host OTP ~s node erpc:call ~s -> otp_release = ~p~n\",
                          [erlang:system_info(otp_release), N, R]),
                halt(case R of \"27\" -> 0; _ -> 2 end);
            pang ->
                io:format(\"otp27: ~s never answered a ping~n\", [N]),
                halt(3)
        end." &
    PID25=$!

    while kill -0 "$PID25" 2>/dev/null && ((waited < 600)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$PID25" 2>/dev/null; then
        say "host node still running after 60 s: killing it"
        kill "$PID25"
    fi
    wait "$PID25" || rc=$?
    PID25=""

    # $! of a backgrounded `otp27.sh erl` must be the chroot's beam itself.
    exe=$(readlink "/proc/$PID27/exe" 2>/dev/null || echo "(gone)")
    if [[ $exe != "$ROOT"/usr/lib/erlang/erts-*/bin/beam.smp ]]; then
        say "PID $PID27 (\$! of 'otp27.sh erl ... &') runs $exe, not the chroot's beam.smp"
        [[ $rc != 0 ]] || rc=4
    fi

    if [[ $rc == 0 ]]; then
        say "check PASSED in $((SECONDS - t0)) s: OTP 25 host node erpc-called the OTP 27 node; \$!=$PID27 is $exe"
    else
        say "output of the OTP 27 node:"
        cat "$LOG27" >&2
        printf '\n*** otp27.sh check FAILED (code %s) ***\n\n' "$rc" >&2
    fi
    return "$rc"
}

# ---------------------------------------------------------------- main

cmd=${1:-help}
[[ $# -gt 0 ]] && shift
case $cmd in
setup) cmd_setup ;;
mount) cmd_mount ;;
umount | unmount) cmd_umount ;;
run) cmd_run "$@" ;;
erl) cmd_erl "$@" ;;
version) cmd_version ;;
check) cmd_check ;;
help | -h | --help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac

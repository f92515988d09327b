#!/usr/bin/env bash
# test_otp27.sh: the OTP 27 / Elixir 1.18 interop suite, run by scripts/test.sh.
#
# Real OTP 27.3 / Elixir 1.18 nodes live in the Debian trixie chroot of
# scripts/otp27.sh (see scripts/OTP27.md) and cluster with the host's OTP 25
# nodes through the host's epmd. This script:
#
#   0. builds the chroot if needed (`otp27.sh setup`: idempotent, stamp file
#      outside the repository); when debootstrap or the mirror is unavailable
#      it fails loudly: the OTP 27 suite is never silently skipped;
#   1. builds on the host what the chroot runs (`MIX_ENV=test mix compile`:
#      our beams and the NIF; the chroot has no Rust);
#   2. mounts the chroot with the repository bound at its own path, then runs
#      (a) cnode's tests that talk to BEAM peers, with OTP 27 peers
#          (CNODE_TEST_ERL / CNODE_TEST_ELIXIR / CNODE_TEST_OTP=27);
#      (b) the Elixir library's single-node ExUnit tests inside the chroot,
#          under Elixir 1.18 / OTP 27, with the host-built NIF (`mix test
#          --exclude multi_node`; separate build root .otp27/_build);
#      (c) rust_tests/tests/otp27.rs (`-- --ignored`): an OTP 25 and an OTP
#          27 Elixir node running our library plus a Rust member converge;
#          the 0.5.1 stand-in on OTP 27 lives with our OTP 25 node and Rust.
#
# Every step runs even when an earlier one failed; any failure fails the run
# (exit 1) after a summary.
#
# Isolation and cleanup: step 2 runs in private mount and PID namespaces
# (unshare). The chroot's mounts made here are seen by no one else (other
# test runs may use the same chroot) and every process started here, chroot
# nodes included, dies with the namespace, even if this script is killed.
# On exit, the trap also kills them and unmounts explicitly.
#
# Env: CARGO_TARGET_DIR (bound into the chroot too when outside the repo),
# OTP27_ROOT / OTP27_MIRROR (scripts/otp27.sh), TEST_OTP27_STEPS (default
# "cnode exunit mixed": run a subset while debugging).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd -P)
OTP27="$REPO/scripts/otp27.sh"

fail_loudly() {
    printf '\n*** test_otp27.sh: FAILED ***\n*** %s\n\n' "$*" >&2
    exit 1
}

if [[ ${TEST_OTP27_INNER:-} != 1 ]]; then
    [[ $(id -u) == 0 ]] || fail_loudly "must run as root (chroot, mount, unshare)"
    command -v unshare >/dev/null || fail_loudly "unshare (util-linux) not found"
    # Host Erlang/Elixir and a host epmd, started here, outside the PID
    # namespace: it serves both OTPs and must outlive this run.
    scripts/ensure_deps.sh
    echo "==> OTP 27 chroot (scripts/otp27.sh setup)"
    "$OTP27" setup ||
        fail_loudly "the OTP 27 / Elixir 1.18 chroot cannot be built (debootstrap or the Debian mirror unavailable?): the OTP 27 suite cannot run; see the errors above and scripts/OTP27.md"
    export TEST_OTP27_INNER=1
    # unshare blocks INT and TERM while it waits for its child (PID 1 of the
    # namespace, this script again): forward them there, its trap cleans up.
    unshare --mount --propagation private --pid --fork --kill-child -- "$REPO/scripts/test_otp27.sh" "$@" &
    NS=$!
    trap 'kill -TERM $(pgrep -P "$NS") 2>/dev/null || true' INT TERM
    while :; do
        RC=0
        wait "$NS" || RC=$?
        kill -0 "$NS" 2>/dev/null || break # else a trapped signal cut the wait short
    done
    exit "$RC"
fi

# ------------------------------------------------------------ in the namespaces

[[ $$ == 1 ]] || fail_loudly "expected to be PID 1 of a new PID namespace, am $$"
T0=$SECONDS
STEPS=${TEST_OTP27_STEPS:-cnode exunit mixed}
TARGET=$(realpath -m "${CARGO_TARGET_DIR:-$REPO/target}")
BIND=$REPO
[[ $TARGET == "$REPO" || $TARGET == "$REPO"/* ]] || BIND="$BIND:$TARGET"
export MIX_ENV=test

cleanup() {
    local rc=$?
    trap '' INT TERM
    # PID 1 of our namespace: -1 reaches every other process in it (test
    # binaries, chroot beams) and nothing outside it.
    kill -KILL -1 2>/dev/null || true
    wait 2>/dev/null || true
    "$OTP27" umount || true
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> host build for the chroot: MIX_ENV=test mix compile"
mix compile

echo "==> mounting the chroot (repository bound at $REPO)"
mkdir -p "$TARGET"
OTP27_BIND=$BIND "$OTP27" mount
"$OTP27" version

FAILED=()
TIMES=()
step() { # name, command...
    local name=$1 t=$SECONDS rc=0
    shift
    if [[ " $STEPS " != *" $name "* ]]; then
        echo "==> [OTP 27] $name: not selected (TEST_OTP27_STEPS=$STEPS)"
        return
    fi
    echo "==> [OTP 27] $name: $*"
    # In the background: a trapped INT/TERM interrupts `wait` (not a
    # foreground command), so a cancelled run stops at once.
    "$@" &
    wait $! || rc=$?
    TIMES+=("$name $((SECONDS - t)) s (exit $rc)")
    if [[ $rc != 0 ]]; then
        FAILED+=("$name")
        printf '\n*** [OTP 27] %s FAILED (exit %s) ***\n\n' "$name" "$rc" >&2
    fi
}

# (a) cnode's tests with a BEAM peer (the test files that start one).
cnode_tests=()
for f in native/cnode/tests/*.rs; do
    if grep -qE 'Beam::|CNODE_TEST_ELIXIR' "$f"; then cnode_tests+=(--test "$(basename "$f" .rs)"); fi
done
step cnode env CNODE_TEST_ERL="$OTP27 run erl" CNODE_TEST_ELIXIR="$OTP27 run elixir" CNODE_TEST_OTP=27 \
    cargo test -p cnode "${cnode_tests[@]}"

# (b) ExUnit under Elixir 1.18 / OTP 27: cargo does not exist in the chroot,
# CARGO=/bin/true makes our compiler task copy the host-built NIF (a no-op,
# `mix compile` above put the same bytes in priv/); a build root of its own
# keeps the host's _build for OTP 25.
step exunit env OTP27_CWD="$REPO" "$OTP27" run env MIX_ENV=test CARGO=/bin/true \
    CARGO_TARGET_DIR="$TARGET" MIX_BUILD_ROOT="$REPO/.otp27/_build" \
    mix test --exclude multi_node

# (c) Mixed clusters with OTP 27 nodes, driven from Rust.
step mixed cargo test -p rust_tests --test otp27 -- --ignored

echo "==> [OTP 27] times: ${TIMES[*]/%/;} total $((SECONDS - T0)) s"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    fail_loudly "OTP 27 interop steps failed: ${FAILED[*]}"
fi
echo "==> [OTP 27] all passed (OTP 27 / Elixir 1.18 peers)"

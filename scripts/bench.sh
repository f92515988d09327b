#!/usr/bin/env bash
# All the benchmarks of issue 6 in one run, ours next to the 0.5.1 layout:
# reads and writes (Elixir, one VM), propagation / idle traffic / throughput /
# scale (real nodes on loopback), criterion microbenchmarks; then writes
# bench/RESULTS.md and bench/*.png. No assertions on times anywhere.
#
#   scripts/bench.sh          # about 8-10 minutes on a 2-core machine
#
# Raw results go to bench/out/ (not committed). Respects CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
start=$(date +%s)

scripts/ensure_deps.sh
if ! command -v gnuplot >/dev/null 2>&1; then
  echo "==> installing gnuplot-nox (apt-get)"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq gnuplot-nox >/dev/null
fi

target=${CARGO_TARGET_DIR:-$root/target}
out=$root/bench/out
rm -rf "$out"
mkdir -p "$out"

echo "==> building (mix compile with MIX_ENV=bench builds the NIF in release; cargo build --release)"
MIX_ENV=bench mix compile
cargo build --release -q -p cluster_helper_bench
export CLUSTER_HELPER_EBIN=$root/_build/bench/lib/cluster_helper/ebin
chbench=$target/release/chbench

{
  echo "date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "machine: $(uname -a)"
  echo "cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') x $(nproc) (nproc)"
  echo "memory:  $(free -m | awk '/Mem:/ {print $2 " MiB"}')"
  echo "OTP:     $(erl -noshell -eval 'io:format("~s (erts ~s)", [erlang:system_info(otp_release), erlang:system_info(version)]), halt().')"
  echo "Elixir:  $(elixir -e 'IO.write(System.version())')"
  echo "Rust:    $(rustc --version)"
  echo "git:     $(git rev-parse --short HEAD 2>/dev/null || echo none)"
} > "$out/env.txt"
cat "$out/env.txt"

rw() {
  elixir -pa "$CLUSTER_HELPER_EBIN" -r bench/baseline_051.ex bench/reads_writes.exs "$@"
}

echo "==> 1. reads (ours vs 0.5.1 layout, one VM per data set)"
for ds in 1x10 100x10 1000x10 10scopes; do
  rw "$out/reads.terms" reads "$ds"
done

echo "==> 2. writes"
rw "$out/writes.terms" writes

echo "==> 3. propagation (3 Elixir + 2 Rust nodes)"
"$chbench" propagation "$out/propagation.terms"

echo "==> 4. idle sync traffic (ours vs the 0.5.1 stand-in)"
"$chbench" idle "$out/idle.terms"

echo "==> 5. distribution throughput"
"$chbench" throughput "$out/throughput.terms"

echo "==> 6. scale"
for k in 50 100 200; do
  "$chbench" scale "$out/scale.terms" "$k"
done

echo "==> 7. criterion microbenchmarks"
cargo bench -q -p cluster_helper_core --bench core -- \
  --warm-up-time 0.5 --measurement-time 1.5 --noplot 2>&1 | tee "$out/criterion.txt"

echo "==> report"
elixir bench/report.exs "$out" "$root/bench" "$(( $(date +%s) - start ))"
echo "==> done in $(( $(date +%s) - start )) s: bench/RESULTS.md"

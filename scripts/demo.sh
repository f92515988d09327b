#!/usr/bin/env bash
# The demo: two Elixir nodes and one Rust node on loopback, told in plain words.
# Installs what is missing, builds everything, cleans up what it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_deps.sh
echo "==> building (cargo and mix)"
export MIX_ENV=dev
mix compile >/dev/null
cargo build --release -q -p cluster_helper_node -p rust_tests --bins
echo
CLUSTER_HELPER_EBIN="$PWD/_build/dev/lib/cluster_helper/ebin" RUST_LOG="${RUST_LOG:-error}" \
  target/release/demo target/release/cluster-helper

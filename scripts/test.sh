#!/usr/bin/env bash
# Every test of the repository, from a fresh clone: installs what is missing,
# then runs the Rust workspace's tests, the Elixir tests (single- and
# multi-node, with real BEAM nodes) and the lints.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure_deps.sh

echo "==> cargo fmt --check"
cargo fmt --all --check

echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

# The mixed-cluster tests (rust_tests) start Elixir nodes with the compiled library.
export MIX_ENV=test
echo "==> mix compile (builds the NIF with cargo)"
mix compile

echo "==> cargo test --workspace"
cargo test --workspace

echo "==> mix test"
mix format --check-formatted
mix test

# OTP 27 / Elixir 1.18 peers (Debian trixie chroot): cnode, ExUnit, mixed clusters.
scripts/test_otp27.sh

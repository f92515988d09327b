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

echo "==> cargo test --workspace"
cargo test --workspace

echo "==> mix test"
export MIX_ENV=test
mix format --check-formatted
mix test

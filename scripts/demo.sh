#!/usr/bin/env bash
# The demo. Installs what is missing, builds, and tells a short story.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure_deps.sh
echo "==> two sync engines, in memory"
cargo run -q -p cluster_helper_core --example two_engines

#!/usr/bin/env bash
# Installs what the project needs on a fresh Debian 12 machine that has Rust:
# Erlang/OTP (with headers), Elixir and epmd, from Debian's packages, and
# starts epmd. Idempotent: installs only what is missing.
set -euo pipefail

need=()
command -v erl >/dev/null 2>&1 || need+=(erlang-nox)
command -v elixir >/dev/null 2>&1 || need+=(elixir)
[ -f /usr/lib/erlang/usr/include/erl_nif.h ] || need+=(erlang-dev)
command -v epmd >/dev/null 2>&1 || need+=(erlang-base)

if [ ${#need[@]} -gt 0 ]; then
  echo "==> installing ${need[*]} (apt-get)"
  sudo_cmd=""
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust first" >&2; exit 1; }

# Distribution needs epmd; `erl` would start it too, but Rust nodes and tests may come first.
epmd -daemon

#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} for the browser tests"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

cargo test --workspace --locked "$@"
# The Byzantine validator exists only with the `byzantine` feature (never in a release build).
cargo test -p medchain --features byzantine --test byzantine --test byzantine_keys --locked "$@"
# schemathesis (pinned, from PyPI, in a virtual environment it creates under the target
# directory) against a live `medchain serve` with a doctor's and a patient's session: no 5xx,
# every answer as /api/openapi.json says, the server still serving after; 2 minutes at most.
./scripts/schemathesis.sh
# Four validator processes under load for two minutes, up to f of them SIGKILLed and restarted at
# random; then every acknowledged transaction is checked, once, at every validator. The long run is
# `cargo run --release -- soak --duration 1h` (README, "Tests and benchmarks").
cargo run -q -p medchain --locked -- soak --duration 2m

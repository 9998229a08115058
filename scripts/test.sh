#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
# The build compiles SQLite and jemalloc from source.
command -v cc >/dev/null 2>&1 || need+=(gcc)
command -v make >/dev/null 2>&1 || need+=(make)
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing ${need[*]} for the build and the tests"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi

# Every test target in one build (the benches built and linted, not run), the test binaries two at
# a time (scripts/run-tests.py). The `byzantine` feature adds the Byzantine validator that
# tests/byzantine*.rs start (`medchain node --byzantine ..`); honest validators run the same code
# with no behaviour set, and it is never in a release build. Arguments go to the test binaries.
python3 scripts/run-tests.py --workspace --all-targets --locked --features medchain/byzantine -- "$@"
# What follows runs the `medchain` binary that build made for the tests (building it again
# without the feature would compile a third of the dependencies again, with the features the
# tests do not unify into them: minutes); no Byzantine behaviour is set in it.
export MEDCHAIN_BIN="${CARGO_TARGET_DIR:-target}/debug/medchain"
# schemathesis (pinned, from PyPI, in a virtual environment it creates under the target
# directory) against a live `medchain serve` with a doctor's and a patient's session: no 5xx,
# every answer as /api/openapi.json says, the server still serving after; 2 minutes at most.
./scripts/schemathesis.sh
# Four validator processes under load for two minutes, up to f of them SIGKILLed and restarted at
# random; then every acknowledged transaction is checked, once, at every validator. The long run is
# `cargo run --release -- soak --duration 1h` (README, "Tests and benchmarks").
"$MEDCHAIN_BIN" soak --duration 2m

#!/usr/bin/env bash
# schemathesis against a live `medchain serve` (scripts/schemathesis.py, issue 12): on first use
# creates a Python virtual environment under the cargo target directory with the pinned
# schemathesis (scripts/schemathesis-requirements.txt, from PyPI), reused while the pins are
# unchanged; builds medchain; then runs the driver.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-target}"
venv="$target/schemathesis-venv"
requirements=scripts/schemathesis-requirements.txt
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$requirements" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/schemathesis" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    echo "installing python3-venv for schemathesis"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3 python3-venv
  fi
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
fi

# MEDCHAIN_BIN: a medchain binary already built (scripts/test.sh passes the tests' own).
medchain="${MEDCHAIN_BIN:-}"
if [ -z "$medchain" ]; then
  cargo build -q -p medchain --locked
  medchain="$target/debug/medchain"
fi
"$venv/bin/python" scripts/schemathesis.py "$medchain" "$venv/bin/schemathesis"

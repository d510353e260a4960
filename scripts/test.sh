#!/usr/bin/env bash
# The test command: installs the Python reference implementations the interop tests talk to, then runs
# every Rust test in the workspace (unit, property, end-to-end).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test   # Debian packages: libhdf5-dev (the NWB export links it), chromium (the report test)
python3 -m pip install --quiet --disable-pip-version-check -r tests/requirements.txt
exec cargo test --workspace --locked "$@"

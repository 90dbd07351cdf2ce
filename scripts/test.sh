#!/usr/bin/env bash
# Set up everything (see scripts/setup.sh) and run the whole test suite, real-data tests included.
# Extra arguments go to pytest, e.g. -m "not slow" for the quick ones only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
exec .venv/bin/python -m pytest "$@"

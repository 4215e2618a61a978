#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh), then runs the test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
# Two worker processes (pytest-xdist); a worker that runs out of tests takes some from the other's queue
# (worksteal). TFPRUNE_TEST_WORKERS=0 runs everything in this process.
exec "$VENV/bin/python" -m pytest -n "${TFPRUNE_TEST_WORKERS:-2}" --dist worksteal "$@"

#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh), then runs the test suite. Extra arguments go to pytest.
#   scripts/test.sh          every test (what CI runs), then the 20 slowest tests
#   scripts/test.sh --fast   the unit-level tier: -m "not slow" (no end-to-end run of a main or a sweep)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
tier=(--durations=20)  # a later --durations=N among the arguments wins
args=()
for arg in "$@"; do
  if [[ "$arg" == --fast ]]; then tier=(-m "not slow"); else args+=("$arg"); fi
done
# Two worker processes (pytest-xdist); a worker that runs out of tests takes some from the other's queue
# (worksteal). TFPRUNE_TEST_WORKERS=0 runs everything in this process.
exec "$VENV/bin/python" -m pytest -n "${TFPRUNE_TEST_WORKERS:-2}" --dist worksteal "${tier[@]}" ${args[@]+"${args[@]}"}

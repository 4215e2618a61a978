#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh), then runs the default offline sweep (Fashion-MNIST).
# Extra arguments are passed to the sweep, e.g. scripts/sweep.sh --flagfile=flags/smoke.flags
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m tfprune.sweep --flagfile=flags/fashion_mnist_quick.flags --resume "$@"

#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh), then runs the default offline sweep (Fashion-MNIST).
# Extra arguments are passed to the sweep, e.g. scripts/sweep.sh --flagfile=flags/smoke.flags
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m tfprune.train_main --dataset=fashion_mnist --model=fc_1000 --train_epochs=3 "$@"

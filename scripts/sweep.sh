#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh), then runs the default offline sweeps (Fashion-MNIST, fc_1000): one-shot
# pruning at the ten classic k's (flags/fashion_mnist_quick.flags), then gradual pruning with a fine-tune epoch,
# exported to TFLite (flags/fashion_mnist_gradual.flags); about 4 minutes on 2 CPU cores from a fresh checkout.
# With arguments it runs one sweep, flags/fashion_mnist_quick.flags plus them, e.g.
#   scripts/sweep.sh --flagfile=flags/smoke.flags --output_dir=/tmp/smoke
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
if [ "$#" -gt 0 ]; then
  exec "$VENV/bin/python" -m tfprune.sweep --flagfile=flags/fashion_mnist_quick.flags --resume "$@"
fi
"$VENV/bin/python" -m tfprune.sweep --flagfile=flags/fashion_mnist_quick.flags --resume
"$VENV/bin/python" -m tfprune.sweep --flagfile=flags/fashion_mnist_gradual.flags --resume
echo "one-shot: runs/fashion_mnist_quick/results.md; gradual, fine-tuned and exported:" \
     "runs/fashion_mnist_gradual/results.md and frontier.png"

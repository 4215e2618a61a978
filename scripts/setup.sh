#!/usr/bin/env bash
# Sets up what is missing, idempotently: .venv with tfprune and its pinned dependencies, and the offline
# datasets that can be installed (Debian's dataset-fashion-mnist). Re-runs take about a second.
# Sourced by sweep.sh, test.sh and bench.sh; run it alone to prepare a machine.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${TFPRUNE_PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $PY"
  "$PY" -m venv "$VENV"
fi
# Reinstall only when the package metadata changed (the stamp is the hash of setup.cfg and pyproject.toml).
stamp="$VENV/.tfprune-setup-stamp"
want="$(cat "$ROOT/setup.cfg" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing tfprune and its pinned dependencies into $VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test]"
  echo "$want" > "$stamp"
fi

# Offline datasets: Debian's Fashion-MNIST (70k images) where apt-get and root are available; skip quietly else.
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "[setup] installing Debian's dataset-fashion-mnist"
  { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && apt-get install -y -q dataset-fashion-mnist; }; } \
    >/dev/null 2>&1 || echo "[setup] dataset-fashion-mnist not installed (apt-get failed); continuing"
fi
export TF_USE_LEGACY_KERAS=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

#!/usr/bin/env bash
# Sets up what is missing (scripts/setup.sh), then runs one benchmark:
#   layers | layer_types | export | shrink | keras3 | own_data | sequences | groups | blocks | point | calibration | qat |
#   keras_hub.
#   scripts/bench.sh blocks                    # unstructured vs 1x4 vs 1x16 blocks x float/int8/dynamic in LiteRT
#   scripts/bench.sh layers --repeats=5
#   scripts/bench.sh export --bench_runs=500    # fc_1000 dense/weight/unit-shrunk x TFLite variants matrix + targets
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup.sh"
cd "$ROOT"
name="${1:?usage: scripts/bench.sh layers|layer_types|export|shrink|keras3|own_data|sequences|groups|blocks|point|calibration|qat|keras_hub [flags...]}"; shift
exec "$VENV/bin/python" "scripts/bench_${name}.py" "$@"

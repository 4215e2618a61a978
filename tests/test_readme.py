"""The README's Keras 3 example runs as written (on the TensorFlow backend, in a fresh process)."""

import os
import re
import subprocess
import sys

import pytest

from conftest import FASHION_DIR, REPO, require

pytestmark = pytest.mark.slow


def _run_block(marker, tmp_path):
    """Runs the README's python block under ``<!-- marker: ... -->`` in a fresh process in ``tmp_path``; its stdout."""
    require(FASHION_DIR)
    text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    (code,) = re.findall(rf"<!-- {marker}:[^\n]*-->\n```python\n(.*?)```", text, re.S)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_the_keras3_example_runs_as_written(tmp_path):
    proc = _run_block("keras3-example", tmp_path)
    assert re.search(r"total\s+238,200\s+214,380\s+90.00%", proc.stdout), proc.stdout[-2000:]
    assert "'accuracy'" in proc.stdout and (tmp_path / "pruned_k3.keras").is_file()


def test_the_keras_hub_example_runs_as_written(tmp_path):
    pytest.importorskip("keras_hub")
    proc = _run_block("keras-hub-example", tmp_path)
    assert re.search(r"vit\.vit_encoder\.transformer_block_1\.mha\s+MultiHeadAttention", proc.stdout), \
        proc.stdout[-2000:]
    assert re.search(r"total\s+[\d,]+\s+[\d,]+\s+(49|50)\.\d\d%", proc.stdout), proc.stdout[-2000:]
    assert "'accuracy'" in proc.stdout and (tmp_path / "vit_pruned.weights.h5").is_file()

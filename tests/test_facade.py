"""``import tfprune`` is light: LiteRT, matplotlib, TFDS and the experiments harness load on first use of a name
that needs them, and every public name still resolves."""

import json
import os
import subprocess
import sys

import pytest

import tfprune
from conftest import REPO

HEAVY = ("matplotlib", "ai_edge_litert", "tensorflow_datasets", "tfprune.experiments", "tfprune.tflite")

# A fresh interpreter: what `import tfprune` alone loads, then what the first use of a lazy name loads, then
# Keras 3's image gallery (whose matplotlib import tfprune defers) drawn to a file.
CHILD = """
import json, os, sys
import tfprune
heavy = {heavy!r}
before = [m for m in heavy if m in sys.modules]
tfprune.to_tflite
after_tflite = [m for m in heavy if m in sys.modules]
import numpy as np
from tfprune._env import keras3
keras3.visualization.plot_image_gallery(np.zeros((2, 8, 8, 3)), path={png!r}, rows=1, cols=2)
print(json.dumps({{"before": before, "after_tflite": after_tflite, "png": os.path.getsize({png!r}),
                  "matplotlib": "matplotlib" in sys.modules}}))
"""


@pytest.mark.slow
def test_import_tfprune_loads_no_heavy_module_until_a_name_needs_it(tmp_path):
    png = str(tmp_path / "gallery.png")
    proc = subprocess.run([sys.executable, "-c", CHILD.format(heavy=HEAVY, png=png)], capture_output=True,
                          text=True, timeout=120, cwd=REPO, env=dict(os.environ, MPLBACKEND="Agg"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["before"] == []
    assert "ai_edge_litert" in seen["after_tflite"] and "tfprune.tflite" in seen["after_tflite"]
    assert "tensorflow_datasets" not in seen["after_tflite"]  # the exporter does not need the data harness
    assert seen["png"] > 0 and seen["matplotlib"]  # Keras 3's gallery still draws, importing pyplot then


def test_every_public_name_resolves_and_lazy_names_are_the_modules_objects():
    from tfprune import tflite  # pylint: disable=g-import-not-at-top
    from tfprune.experiments import models  # pylint: disable=g-import-not-at-top
    from tfprune.experiments.data import sources as data_sources
    for name in tfprune.__all__:
        assert getattr(tfprune, name) is not None, name
    assert tfprune.to_tflite is tflite.to_tflite and tfprune.load_data is data_sources.load
    assert tfprune.models is models
    assert set(tfprune.__all__) <= set(dir(tfprune))
    with pytest.raises(AttributeError, match="module 'tfprune' has no attribute 'no_such_name'"):
        tfprune.no_such_name  # pylint: disable=pointless-statement

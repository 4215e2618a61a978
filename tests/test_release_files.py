"""Files saved by an earlier release still load: the prunable models of tests/fixtures/release-*/ (both stacks,
.keras and .h5; written by scripts/make_release_fixtures.py) load with ``load_user_model``, give the outputs they gave
when saved and keep every zero, and strip to plain models with the same outputs."""

import glob
import json
import os

import numpy as np
import pytest

from conftest import REPO
from tfprune import load_user_model, sparsity_report, stacks, strip
from tfprune.layers import registry

RELEASES = sorted(glob.glob(os.path.join(REPO, "tests", "fixtures", "release-*")))
CASES = [(folder, file) for folder in RELEASES
         for file in json.load(open(os.path.join(folder, "files.json"), encoding="utf-8"))["files"]]


def test_there_is_a_release_fixture():
    assert CASES and all(os.path.exists(os.path.join(folder, file)) for folder, file in CASES)


@pytest.mark.parametrize("folder,file", CASES, ids=[f"{os.path.basename(f)}/{n}" for f, n in CASES])
def test_an_earlier_release_file_loads_with_its_masks(folder, file):
    with np.load(os.path.join(folder, "expected.npz")) as f:
        expected = dict(f)
    model = load_user_model(os.path.join(folder, file))
    stack = stacks.of(model)
    assert stack.name == file.split("-")[0]
    assert all(registry.is_prunable(layer) for layer in registry.kernel_layers(model))
    batch = expected[f"{file.split('-')[1].split('.')[0]}/inputs"]
    np.testing.assert_allclose(stack.to_numpy(model(batch)), expected[f"{file}/outputs"], atol=1e-5)
    zeros = [r.zeros for r in sparsity_report(model)]
    assert zeros == expected[f"{file}/zeros"].tolist() and sum(zeros) > 0
    plain = strip(model)
    np.testing.assert_allclose(stack.to_numpy(plain(batch)), expected[f"{file}/outputs"], atol=1e-5)

"""The pruning schedule's step lives in the model (``tfprune.layers.schedule_step``), as TF-MOT's ``pruning_step``:
a model saved after one epoch of a scheduled fine-tune and loaded again resumes its schedule where it was, giving the
same masks after two more epochs as three uninterrupted epochs, on both Keras stacks and in .keras and .h5 files.
Files written before the step existed load with step 0 (tests/test_release_files.py)."""

import numpy as np
import pytest
import tensorflow_model_optimization as tfmot

from conftest import run_on_jax
from tfprune import load_user_model, make_prunable, stacks, strip
from tfprune.callbacks import RankPruning
from tfprune.layers import registry, schedule_step
from tfprune._env import keras, keras3

STACKS = {"tf_keras": keras, "keras3": keras3}
BATCH, IMAGES = 125, 1000  # 8 steps per epoch


def _masks(model):
    stack = stacks.of(model)
    return [stack.to_numpy(layer.kernel_mask) for layer in registry.kernel_layers(model)]


def _fresh(k, x):
    """A prunable fc model of stack ``k``, same initial weights every call, compiled with plain SGD (no optimizer
    state, so a restored model continues exactly)."""
    k.utils.set_random_seed(0)
    L = k.layers
    model = make_prunable(k.Sequential([k.Input(x.shape[1:]), L.Flatten(), L.Dense(64, activation="relu", name="fc1"),
                                        L.Dense(32, activation="relu", name="fc2"),
                                        L.Dense(10, activation="softmax", name="out")]))
    model.compile(k.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    return model


def _schedule():
    # The ramp ends at the last step of three epochs: a schedule restarted at 0 ends short of 0.9.
    return tfmot.sparsity.keras.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=24, frequency=2)


def _fit(model, x, y, epochs):
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[RankPruning("weight", _schedule())])


@pytest.mark.parametrize("stack,suffix", [("tf_keras", ".keras"), ("tf_keras", ".h5"), ("keras3", ".keras")])
def test_a_model_restored_mid_fine_tune_resumes_its_schedule(small_fashion, tmp_path, stack, suffix):
    (x, y), _ = small_fashion
    x, y = x[:IMAGES], y[:IMAGES]
    k = STACKS[stack]
    uninterrupted = _fresh(k, x)
    _fit(uninterrupted, x, y, 3)

    first = _fresh(k, x)
    _fit(first, x, y, 1)
    path = str(tmp_path / f"checkpoint{suffix}")
    first.save(path)
    restored = load_user_model(path)
    restored.compile(k.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    assert [schedule_step.step_of(l) for l in registry.kernel_layers(restored)] == [8, 8, 8]
    _fit(restored, x, y, 2)
    assert [schedule_step.step_of(l) for l in registry.kernel_layers(restored)] == [24, 24, 24]
    for a, b in zip(_masks(uninterrupted), _masks(restored)):
        np.testing.assert_array_equal(a, b)
    assert abs(1 - np.mean(_masks(restored)[0]) - 0.9) < 0.01

    # The same restart with the step set back to 0 ends elsewhere: the test above can fail.
    restarted = load_user_model(path)
    restarted.compile(k.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
    for layer in registry.kernel_layers(restarted):
        layer.pruning_step = 0
    _fit(restarted, x, y, 2)
    assert not all(np.array_equal(a, b) for a, b in zip(_masks(uninterrupted), _masks(restarted)))


@pytest.mark.parametrize("stack", sorted(STACKS))
def test_the_step_is_in_the_config_not_in_the_weights_and_strip_drops_it(small_fashion, stack):
    (x, _), _ = small_fashion
    model = _fresh(STACKS[stack], x)
    weights = len(model.weights)
    layer = registry.kernel_layers(model)[0]
    layer.pruning_step = 5
    assert layer.get_config()["pruning_step"] == 5 and len(model.weights) == weights
    clone = make_prunable(model)  # prunable layers are kept with their masks, and their step
    assert schedule_step.step_of(registry.kernel_layers(clone)[0]) == 5
    assert all("pruning_step" not in l.get_config() for l in strip(model).layers)


JAX_RUN = """
import json, sys
import numpy as np, keras, tfprune
from tfprune.experiments.data import builtin as data
from tfprune.layers import registry
sys.path.insert(0, sys.argv[2])
import test_schedule_step as t
(x, y), _ = data.load_dataset("fashion_mnist", sys.argv[3], download=False)
x, y = x[:t.IMAGES], y[:t.IMAGES]
uninterrupted = t._fresh(keras, x)
t._fit(uninterrupted, x, y, 3)
first = t._fresh(keras, x)
t._fit(first, x, y, 1)
first.save(sys.argv[1] + "/checkpoint.keras")
restored = tfprune.load_user_model(sys.argv[1] + "/checkpoint.keras")
steps = [layer.pruning_step for layer in registry.kernel_layers(restored)]
restored.compile(keras.optimizers.SGD(0.05), "sparse_categorical_crossentropy")
t._fit(restored, x, y, 2)
print(json.dumps({"backend": keras.backend.backend(), "steps": steps,
                  "equal": all(bool(np.array_equal(a, b)) for a, b in zip(t._masks(uninterrupted), t._masks(restored)))}))
"""


@pytest.mark.slow
def test_a_restored_model_resumes_its_schedule_on_jax(tmp_path):
    result = run_on_jax(JAX_RUN, tmp_path)
    assert result == {"backend": "jax", "steps": [8, 8, 8], "equal": True}

"""The layer families (``tfprune/layers/``): one module per family covering both stacks, one prunable-layer protocol
returning NumPy, no ``call`` copied from Keras, the registry's table generated from the families."""

import inspect

import numpy as np
import pytest

import tfprune  # noqa: F401
from tfprune.layers import registry, stored_masks
from tfprune._env import keras, keras3

from conftest import plain_layer

L, L3 = keras.layers, keras3.layers


KIND_NAMES = list(dict.fromkeys(k.name for k in registry.KINDS))


def test_every_family_module_covers_both_stacks_and_the_table_is_theirs():
    assert [k for f in registry.FAMILIES for k in f.KINDS] == list(registry.KINDS)
    for family in registry.FAMILIES:
        stacks_of = {issubclass(k.plain, L3.Layer) for k in family.KINDS}
        assert stacks_of == {True, False}, family.__name__
        assert {k.prunable.__module__ for k in family.KINDS} == {family.__name__}
    assert len(KIND_NAMES) == 17


def test_no_prunable_class_copies_a_keras_call():
    for cls in registry.PRUNABLE_CLASSES:
        own = [c for c in inspect.getmro(cls) if c.__module__.startswith("tfprune.")]
        assert not any("call" in vars(c) for c in own), cls
        assert issubclass(cls, stored_masks.StoredMaskMethods), cls


@pytest.mark.parametrize("stack", ["tf_keras", "keras3"])
@pytest.mark.parametrize("name", KIND_NAMES)
def test_one_protocol_returns_numpy_and_holds_the_zeros(stack, name):
    make, inputs = plain_layer(L if stack == "tf_keras" else L3, name)
    plain = make()
    expected = plain(*inputs)
    twin = registry.to_prunable(plain)
    twin(*inputs)
    twin.copy_plain(plain)
    np.testing.assert_allclose(np.asarray(twin(*inputs)), np.asarray(expected), atol=1e-6)
    mask, kernel, weights = twin.kernel_mask, twin.masked_kernel(), twin.masked_weights()
    assert isinstance(mask, np.ndarray) and isinstance(kernel, np.ndarray)
    assert all(isinstance(w, np.ndarray) for w in weights) and len(weights) == len(plain.get_weights())
    assert mask.shape == kernel.shape == registry.kernel_shape(twin)
    keep = np.random.default_rng(1).random(mask.shape) < 0.5
    twin.set_masks(keep)
    assert np.array_equal(twin.kernel_mask > 0.5, keep)
    assert np.all(twin.masked_kernel()[~keep] == 0)
    for variable, held in twin.variable_masks():  # the variables hold the zeros
        assert np.all(stored_masks.to_numpy(variable)[stored_masks.to_numpy(held) == 0] == 0)

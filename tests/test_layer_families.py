"""The layer families (``tfprune/layers/``): one module per family covering both stacks, one prunable-layer protocol
returning NumPy, no ``call`` copied from Keras, the registry's table generated from the families."""

import inspect

import numpy as np
import pytest

import tfprune  # noqa: F401
from tfprune.layers import registry, stored_masks
from tfprune._env import keras, keras3

L, L3 = keras.layers, keras3.layers


def _plain(layers, name):
    """A small plain layer of kind ``name`` and inputs for it (batch of 2)."""
    rng = np.random.default_rng(0)
    image, volume, seq = rng.random((2, 8, 8, 3), "float32"), rng.random((2, 4, 4, 4, 2), "float32"), rng.random(
        (2, 6, 3), "float32")
    return {
        "Dense": (lambda: layers.Dense(5), (rng.random((2, 4), "float32"),)),
        "Conv1D": (lambda: layers.Conv1D(4, 3), (seq,)),
        "Conv2D": (lambda: layers.Conv2D(4, 3), (image,)),
        "Conv3D": (lambda: layers.Conv3D(4, 2), (volume,)),
        "DepthwiseConv2D": (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (image,)),
        "Embedding": (lambda: layers.Embedding(10, 4), (rng.integers(0, 10, (2, 5)),)),
        "Conv1DTranspose": (lambda: layers.Conv1DTranspose(4, 3), (seq,)),
        "Conv2DTranspose": (lambda: layers.Conv2DTranspose(4, 3), (image,)),
        "Conv3DTranspose": (lambda: layers.Conv3DTranspose(4, 2), (volume,)),
        "SeparableConv1D": (lambda: layers.SeparableConv1D(4, 3), (seq,)),
        "SeparableConv2D": (lambda: layers.SeparableConv2D(4, 3), (image,)),
        "SimpleRNN": (lambda: layers.SimpleRNN(4), (seq,)),
        "GRU": (lambda: layers.GRU(4), (seq,)),
        "LSTM": (lambda: layers.LSTM(4), (seq,)),
        "EinsumDense": (lambda: layers.EinsumDense("ab,bc->ac", output_shape=5, bias_axes="c"),
                        (rng.random((2, 4), "float32"),)),
        "MultiHeadAttention": (lambda: layers.MultiHeadAttention(2, 3), (seq, seq)),
        "Bidirectional": (lambda: layers.Bidirectional(layers.LSTM(4)), (seq,)),
    }[name]


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
    make, inputs = _plain(L if stack == "tf_keras" else L3, name)
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

"""Dead units of one layer, read from its weights: the one test both shrinkers (``surgery`` for plain chains and
coupled groups, ``blocks`` inside blocks) apply before they cut.

A unit is dead when its unit-kernel column is all zero (over the inputs that are kept): its output no longer depends
on the layer's input, it is the constant ``f(bias)`` (0 for an Embedding, whose dead column looks up zeros).
"""

import numpy as np

from tfprune import stacks
from tfprune.layers import registry


def zero_columns(layer, kind, in_keep=None):
    """Indices of the units of ``layer`` (of registry ``kind``) whose unit-kernel column is all zero over the input
    rows ``in_keep`` (None: all), in increasing order."""
    kernel = kind.layout.unit_kernel(kind.slice(layer.get_weights(), in_keep))
    return np.flatnonzero(~np.asarray(kernel).reshape(-1, kernel.shape[-1]).any(axis=0))


def constant_outputs(layer, kind, units, elementwise_only=True):
    """(values, reason): the constant outputs ``f(bias[units])`` of dead ``units`` of a non-recurrent layer, float32
    of shape (len(units),), with reason None; or (None, why they are not constant). ``elementwise_only``: refuse an
    activation the registry does not know as element-wise (False: read it as if it were, for a caller that proves
    the cut on real outputs, as ``blocks`` does for KerasHub's ``gelu_approximate``)."""
    bias = kind.layout.bias(layer.get_weights())
    pre = np.asarray(bias, np.float32)[units] if bias is not None else np.zeros(len(units), np.float32)
    if not hasattr(layer, "activation"):  # an Embedding
        return pre, None
    if elementwise_only and not registry.is_elementwise(layer):
        return None, f"activation {registry.activation_name(layer)!r} is not element-wise"
    stack = stacks.of(layer)
    return stack.to_numpy(layer.activation(stack.to_tensor(pre[None])))[0], None


__all__ = ["constant_outputs", "zero_columns"]

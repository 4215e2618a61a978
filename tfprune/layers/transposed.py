"""The transposed-convolution family, both stacks: ``PrunableConv1DTranspose/2DTranspose/3DTranspose``.

A transposed convolution's kernel is (k..., filters, in): its **units (output filters) are axis -2** and axis -1
reads the input's channels, the other way round from a convolution. tfprune ranks it through its unit kernel, the
kernel with those two axes swapped, (k..., in, filters), units last like every other kind (``layouts.
TransposedLayout``, which also maps unit-kernel masks back). Both stacks' transposed convolutions read
``self.kernel`` and ``self.bias`` in their ``call``; the masks are held in the variables
(``tfprune.layers.stored_masks``).
"""

import numpy as np

from tfprune.structure import graph
from tfprune.layers.kinds import LayerKind, both_stacks, conv_support
from tfprune.layers.layouts import TransposedLayout
from tfprune.layers.stored_masks import Keras3AttrKernelBias, TfKerasKernelBias, prunable_classes

_NAMES = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
_LAYOUT = {"LAYOUT": TransposedLayout()}
_CLASSES = prunable_classes((TfKerasKernelBias, Keras3AttrKernelBias), _NAMES,
                            "kernel (k..., filters, in) and bias (filters,)", __name__,
                            {name: (_LAYOUT, _LAYOUT) for name in _NAMES})
TF_KERAS, KERAS3 = _CLASSES["tf_keras"], _CLASSES["keras3"]


def _transposed_macs(layer, output_shape):  # pylint: disable=unused-argument
    """Transposed convolutions: every input position multiplies the whole kernel (k... * units * in)."""
    positions = int(np.prod(graph.input_shape(layer)[1:-1], dtype=np.int64))
    return positions * int(np.prod(layer.kernel.shape, dtype=np.int64))


ORDER = 40  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(getattr(layers, name), _CLASSES[stack][name], "filters", unsupported=conv_support,
              macs=_transposed_macs, layout=TransposedLayout(), inputs_axis=True) for name in _NAMES])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS"]

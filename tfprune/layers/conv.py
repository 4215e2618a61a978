"""The convolution family, both stacks: ``PrunableConv1D/2D/3D`` (kernel (k..., in, filters), bias (filters,)) and
``PrunableDepthwiseConv2D`` (kernel (kh, kw, in, multiplier), bias (in * multiplier,); weight pruning only: its
channels follow its input, it has no units of its own).

Masks are held in the variables (``tfprune.layers.stored_masks``); the parent's ``call`` runs unchanged. Grouped
convolutions (``groups > 1``) stay dense.
"""

from tfprune.layers.kinds import LayerKind, both_stacks, conv_support
from tfprune.layers.layouts import DepthwiseLayout
from tfprune.layers.stored_masks import Keras3AttrKernelBias, Keras3KernelBias, TfKerasKernelBias, prunable_classes

_CONVS = ("Conv1D", "Conv2D", "Conv3D")
_CLASSES = prunable_classes((TfKerasKernelBias, Keras3KernelBias), _CONVS,
                            "kernel (k..., in, filters) and bias (filters,)", __name__)
_DEPTHWISE = prunable_classes(
    (TfKerasKernelBias, Keras3AttrKernelBias), ("DepthwiseConv2D",),
    "depthwise kernel (kh, kw, in, multiplier) and bias (in * multiplier,)", __name__,
    {"DepthwiseConv2D": ({"_KERNEL": "depthwise_kernel", "_KERNEL_CONSTRAINT": "depthwise_constraint",
                          "LAYOUT": DepthwiseLayout()}, {"LAYOUT": DepthwiseLayout()})})
TF_KERAS = {**_CLASSES["tf_keras"], **_DEPTHWISE["tf_keras"]}
KERAS3 = {**_CLASSES["keras3"], **_DEPTHWISE["keras3"]}
_BY_STACK = {"tf_keras": TF_KERAS, "keras3": KERAS3}

ORDER = 20  # where these kinds come in the registry's table (and in messages)
KINDS = both_stacks(lambda layers, stack: [
    LayerKind(getattr(layers, name), _BY_STACK[stack][name], "filters", unsupported=conv_support, inputs_axis=True)
    for name in _CONVS] + [
    LayerKind(layers.DepthwiseConv2D, _BY_STACK[stack]["DepthwiseConv2D"], "depth_multiplier",
              kernel_attr="depthwise_kernel" if stack == "tf_keras" else "kernel", has_units=False,
              layout=DepthwiseLayout())])

__all__ = ["KERAS3", "KINDS", "ORDER", "TF_KERAS"]

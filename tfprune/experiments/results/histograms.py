"""Weight-magnitude histograms: how pruning reshapes each layer's distribution of |w| (log10 bins)."""

import numpy as np

from tfprune.layers import registry

HIST_EDGES = np.linspace(-5.0, 0.5, 56)  # log10 |w| bins of the magnitude histograms


def magnitude_histograms(model):
    """Per prunable-kind layer: {"zeros": count, "counts": histogram of log10|w| over HIST_EDGES for w != 0}."""
    out = {}
    for layer in registry.kernel_layers(model):
        kernel = registry.effective_kernel(layer).ravel()
        nonzero = np.abs(kernel[kernel != 0])
        counts, _ = np.histogram(np.log10(nonzero), bins=HIST_EDGES) if nonzero.size else (np.zeros(55), None)
        out[layer.name] = {"zeros": int(kernel.size - nonzero.size), "counts": [int(c) for c in counts]}
    return out


__all__ = ["HIST_EDGES", "magnitude_histograms"]

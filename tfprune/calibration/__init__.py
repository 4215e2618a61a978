"""Calibration: statistics of a model's prunable layers on a few training batches, and the methods that need them.

``data`` (``Calibration``: the inputs, labels and batch size), ``capture`` (each layer's call inputs, seen while the
model runs eagerly: graph and subclassed models, both stacks, every backend), ``statistics`` (input norms, Gram
matrices, gradient squares, per layer), ``reconstruction`` (SparseGPT's layer-wise OBS pruning and the next-layer
refit after unit pruning, layer by layer in model order so later layers see pruned inputs).
"""

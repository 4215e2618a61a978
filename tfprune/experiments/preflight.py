"""Checks of a study's settings against its model, made before any work (before a baseline is trained).

A sweep's layer selection, per-layer plan and k's are checked on the model's architecture (for a reference model
an untrained build, which takes a fraction of a second), so a misspelt ``--layers`` name or a k that would prune
every weight of a layer is one ``ConfigError`` at start-up, not a traceback after training.
"""

import numpy as np

from tfprune.select import group_pruning
from tfprune.select import masks
from tfprune import pruning
from tfprune import quantization
from tfprune.calibration import statistics
from tfprune.layers import registry
from tfprune.select import scoring
from tfprune.experiments.data import dataset as dataset_lib
from tfprune.experiments import models
from tfprune.experiments.results import records
from tfprune.experiments import config as config_lib
from tfprune.experiments.config import ConfigError


def architecture(baseline, datasets):
    """An untrained build of the config's reference model for the data's input shape and class count (the
    weights are random).

    Raises:
      ConfigError: the model cannot take the data (small_cnn on inputs that are not images, say).
    """
    data = dataset_lib.as_dataset(datasets)
    try:
        return models.build(baseline.model, data.input_shape, data.num_classes, keras=baseline.keras)
    except ValueError as e:
        raise ConfigError(f"--model={baseline.model} on {data.name}: {e}") from None


def _groups(scorer, layer):
    """How many groups (weights, units...) ``scorer`` ranks in ``layer``'s kernel."""
    return int(scorer.alive(np.ones(registry.kernel_shape(layer), bool)).size)


def _check_scope(scorer, method, scope):
    """A ``ConfigError`` naming ``--methods`` when the method cannot rank in ``scope`` (``Scorer.check_scope``)."""
    try:
        scorer.check_scope(scope)
    except ValueError:
        raise ConfigError(f"--methods={method} {scorer.layer_only}: --scope=layer only") from None


def _check_ks(scorer, method, ks):
    """A ``ConfigError`` naming ``--methods`` and the k when an N:M method cannot prune to k (``Scorer.check_sparsity``:
    its one k, or 0)."""
    for k in ks:
        try:
            scorer.check_sparsity(k / 100.0)
        except ValueError:
            n, m = scorer.pattern
            raise ConfigError(f"--sparsities: --methods={method} keeps {n} of every {m} weights, so it prunes k = "
                              f"{records.format_k(100 * scorer.fixed_sparsity)} % exactly (or nothing at k = 0), not "
                              f"k = {records.format_k(k)} %") from None


def _check_calibration(method, layers):
    """A ``ConfigError`` naming ``--methods`` when a calibration method cannot read a layer."""
    try:
        for layer in layers:
            statistics.check_layer(layer, method)
    except ValueError as e:
        raise ConfigError(f"--methods={method}: {e}") from None


M_BY_N_KINDS = ("Dense", "Conv2D")  # the layers tfmot_method.m_by_n_layers wraps


def _check_m_by_n_layers(prunable, method, selected, what):
    """A ``ConfigError`` when a TF-MOT N:M method would run on a layer other than Dense and Conv2D."""
    other = [n for n in selected if registry.kind_of(prunable.get_layer(n)).plain.__name__ not in M_BY_N_KINDS]
    if other:
        raise ConfigError(f"{what}: {method} (TF-MOT sparsity_m_by_n) prunes Dense and Conv2D layers only, not "
                          f"{', '.join(repr(n) for n in other)}")


def check_sweep(config, model):
    """Raises ``ConfigError`` unless every method's layer selection and every k of ``config`` can run on ``model``.

    Checks, per method: the ``layers`` names (or the plan's) exist and are prunable, unit methods leave the output
    layers alone, the method can cut every selected kernel (``Scorer.check``: blocks, N:M groups) and rank in the
    scope, an N:M method's k is its own (or 0), and (layer scope) no k prunes every weight or unit of a selected
    layer: a k below 100 % that rounds to all of them (``--sparsities=99.99999`` on a 784x300 kernel) is refused
    with the largest k that keeps one; with QAT, that the model can be trained quantization-aware.
    """
    if config.finetune.qat_epochs:
        try:
            quantization.check_quantizable(model)
        except quantization.QATError as e:
            raise ConfigError(f"--qat_epochs={config.finetune.qat_epochs}: {e}") from None
    prunable = pruning.make_prunable(model)
    plan = config.layer_sparsity
    layers = dict(plan) if plan is not None else (list(config.layers) if config.layers is not None else None)
    ks = [None] if plan is not None else config.sparsities
    for method in config.methods:
        rank = "weight" if config_lib.is_tfmot(method) else method  # TF-MOT prunes the same kernels by |w|
        scorer = scoring.check_method(rank)
        _check_scope(scorer, method, config.scope)
        if plan is None:  # a TF-MOT N:M method's k is its tfprune twin's (nm_2x4: 0 or 50)
            _check_ks(scoring.check_method(config_lib.tfmot_nm_method(method) or rank), method, ks)
        # With the default layers, what the plan refuses is the method's (a block or N:M pattern a kernel cannot take).
        what = "--layer_sparsity" if plan is not None else "--layers" if layers is not None else f"--methods={method}"
        try:
            if scorer.couples_channels:  # a plan of channel groups, and how many channels each has
                selected, groups, _ = group_pruning.resolve(prunable, 0.0, layers)
                sizes = {name: groups[name].size for name in selected}
            else:
                selected = pruning.resolve_plan(prunable, 0.0, rank, layers)
        except ValueError as e:
            raise ConfigError(f"{what}: {e}") from None
        if not scorer.couples_channels:
            if scoring.needs_calibration(rank):
                _check_calibration(method, [prunable.get_layer(name) for name in selected])
            sizes = {name: _groups(scorer, prunable.get_layer(name)) for name in selected}
        if config_lib.tfmot_nm_method(method) is not None and layers is not None:  # by default: Dense and Conv2D
            _check_m_by_n_layers(prunable, method, selected, what)
        if config_lib.is_tfmot(method) or config.scope != "layer":
            continue  # TF-MOT keeps at least one weight per kernel; global scope ranks across layers
        for k in ks:
            for name, fraction in selected.items():
                fraction = fraction if k is None else k / 100.0
                n = sizes[name]
                if masks.prune_count(fraction, n) >= n:
                    largest = 100.0 * (n - 0.5) / n  # prune_count(s, n) < n  <=>  s < (n - 1/2) / n
                    unit = ("weights" if rank == "weight" else "channels" if scorer.couples_channels else
                            "blocks" if scorer.block else "units")
                    where = "group" if scorer.couples_channels else "layer"
                    raise ConfigError(
                        f"{what if k is None else '--sparsities'}: {method} pruning at k = "
                        f"{records.format_k(100 * fraction)} % would remove all {n:,} {unit} of {where} {name!r} "
                        f"(round(k·n) = n); use a k below {largest:.6g} % for it")


__all__ = ["architecture", "check_sweep"]

"""What a budget search's probe exports, and where the walk along a family's ladder starts.

``BudgetExporter`` is the sweep's ``PointExporter`` with the search's choices: each family exports its own variants
(``budget.FAMILIES``; the dense k = 0 probe the references'); a unit probe exports only its physically shrunk model,
fine-tuned again after shrinking for ``shrunk_epochs`` (cheap: the model is small, and it recovers what the narrower
layers lost). ``predictor`` estimates each family's file size and latency at a k from the dense files and from the
pruned shapes (unit: the shrunk model's exact parameter and MAC counts), only to choose where the walk starts.
"""

from tfprune import pruning
from tfprune.select import scoring
from tfprune import stacks
from tfprune.shrinking import surgery
from tfprune.experiments.budget import search as budget_lib
from tfprune.experiments import models
from tfprune.experiments import point_export
from tfprune.experiments.results import records

# Rough file-size and latency factors of a sparse encoding over the dense file times the kept fraction (block
# indices, CSR indices, sparse kernels slower per weight than XNNPACK's dense ones): measured on fc_1000
# (docs/results/bench_blocks), used only to pick a walk's first k.
_SPARSE_SIZE = {"int8+sparse": 1.6, "dynamic+sparse": 1.6, "float+sparse": 1.4, "float16+sparse": 2.6}
_SPARSE_LATENCY = 3.0


class BudgetExporter(point_export.PointExporter):
    """``PointExporter`` exporting ``budget.FAMILIES[method]``'s variants (``DENSE_VARIANTS`` at k = 0); unit probes
    export their shrunk model only, first fine-tuned ``shrunk_epochs`` epochs on ``train`` (a ``dataset`` split)
    with Adam from ``learning_rate`` on a cosine decay to 0, batch ``batch_size``, seeded by ``seed``."""

    def __init__(self, x_eval, y_eval, representative_data, out_dir, train, shrunk_epochs=10, batch_size=128,
                 learning_rate=1e-3, seed=0, **kwargs):
        super().__init__(list(budget_lib.DENSE_VARIANTS), x_eval, y_eval, representative_data, out_dir, **kwargs)
        self.train, self.shrunk_epochs = train, shrunk_epochs
        self.batch_size, self.learning_rate, self.seed = batch_size, learning_rate, seed

    def _variants(self, method, k):
        return budget_lib.DENSE_VARIANTS if k == 0 else budget_lib.FAMILIES[method][1]

    def _targets(self, stripped_model, method):
        if not scoring.removes_units(method):
            return None, [(stripped_model, records.PRUNED)]
        shrunk, shrink = self._shrink(stripped_model)
        if self.shrunk_epochs:
            inputs = self.train.fit_inputs(self.batch_size, self.seed)
            steps = self.shrunk_epochs * -(-len(self.train) // self.batch_size)
            decay = stacks.of(shrunk).keras.optimizers.schedules.CosineDecay(self.learning_rate, steps)
            models.compile_model(shrunk, decay)  # Adam on a cosine decay to 0: the small model trains to convergence
            shrunk.fit(epochs=self.shrunk_epochs, verbose=0, **inputs)
        return shrink, [(shrunk, records.SHRUNK)]


def weight_shares(model):
    """{layer: its share of the model's kernel weights} of every prunable layer (fractions summing to 1)."""
    report = pruning.sparsity_report(model)
    total = sum(r.weights for r in report)
    return {r.name: r.weights / total for r in report}


def unit_ratios(model, layers, ks):
    """{k: (shrunk parameters / dense, shrunk MACs / dense)} of ``model`` unit-pruned at each k in ``layers`` (the
    counts are exact: the rank decides which units go, not how many)."""
    out = {}
    prunable = pruning.make_prunable(model)
    dense = prunable.get_weights()
    for k in ks:
        prunable.set_weights(dense)
        report = surgery.shrink(pruning.strip(pruning.prune(prunable, k / 100.0, "unit", layers=list(layers)))).report
        out[k] = (report.params_after / report.params_before, report.macs_after / max(1, report.macs_before))
    return out


def predictor(model, dense_candidates, family, layers, ladder=budget_lib.LADDER):
    """``k -> [(variant, predicted size bytes, predicted latency ms)]`` for ``family`` on ``model``, scaled from
    the dense files ``dense_candidates`` (``frontier.Candidate``s of the k = 0 probe, by variant)."""
    dense = {c.variant: c for c in dense_candidates}
    method, variants = budget_lib.FAMILIES[family]
    ratios = unit_ratios(model, layers, ladder) if scoring.removes_units(method) else None  # counts as "unit"
    pruned_share = sum(share for name, share in weight_shares(model).items() if name in layers)

    def base(variant):  # the dense file a variant scales from (float16 is the float file at half the bytes)
        name = variant.replace("+sparse", "")
        return (dense["float"], 0.5) if name == "float16" else (dense[name], 1.0)

    def predict(k):
        out = []
        for variant in variants:
            ref, size_scale = base(variant)
            if ratios is not None:
                params, macs = ratios[k]
                out.append((variant, ref.size_bytes * params * size_scale, ref.latency_ms * macs))
            else:
                kept = 1.0 - pruned_share * k / 100.0  # the kernel weights left
                out.append((variant, ref.size_bytes * size_scale * kept * _SPARSE_SIZE[variant],
                            ref.latency_ms * min(1.0, kept * _SPARSE_LATENCY)))
        return out
    return predict


def predicted_fit(predict, budget):
    """``k -> bool``: whether some variant is predicted to fit ``budget``'s size and latency limits."""
    def ok(k):
        return any((budget.max_size_kib is None or size <= budget.max_size_kib * 1024)
                   and (budget.max_latency_ms is None or latency <= budget.max_latency_ms)
                   for _, size, latency in predict(k))
    return ok


def describe_prediction(predict, k):
    """One line: the predicted size and latency of each variant at ``k``."""
    return ", ".join(f"{v} ~{s / 1024:,.0f} KiB ~{lat:.3g} ms" for v, s, lat in predict(k))


__all__ = ["BudgetExporter", "describe_prediction", "predicted_fit", "predictor", "unit_ratios", "weight_shares"]

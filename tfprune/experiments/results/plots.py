"""PNG plots of sweep results (matplotlib, Agg backend): accuracy, loss and size vs k; magnitude histograms."""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  pylint: disable=g-import-not-at-top

from tfprune.files import io_utils  # noqa: E402
from tfprune.experiments.budget import frontier as frontier_lib  # noqa: E402
from tfprune.experiments.results import histograms as hist_lib  # noqa: E402
from tfprune.experiments.results import records  # noqa: E402
from tfprune.experiments.results import tables  # noqa: E402

STYLE = {"weight": dict(marker="o", color="tab:blue"), "unit": dict(marker="s", color="tab:orange"),
         "group": dict(marker="D", color="tab:red"), "group_mean": dict(marker="v", color="tab:purple"),
         "group_max": dict(marker="P", color="tab:brown"), "tfmot": dict(marker="^", color="tab:green"),
         "block_1x4": dict(marker="x", color="tab:cyan"), "block_1x16": dict(marker="*", color="tab:pink"),
         "nm_2x4": dict(marker="h", color="black"), "nm_1x4": dict(marker="H", color="tab:gray"),
         "tfmot_block_1x4": dict(marker="1", color="tab:olive"), "tfmot_block_1x16": dict(marker="2", color="tab:gray"),
         "tfmot_nm_2x4": dict(marker="3", color="tab:orange")}


def _save(fig, path):
    """Saves atomically: a reader never sees half a PNG."""
    with io_utils.atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def metric_vs_k(points, value, ylabel, title, path, baseline=None, scale=1.0, logy=False):
    """One line per method of ``value(point) * scale`` against k %, with an optional dense baseline line.

    ``value``: a function of a ``PointRecord`` returning a number or None (the point is then left out).
    """
    fig, ax = plt.subplots(figsize=(7, 4.5))
    shown = []
    for method in tables.methods_in(points):
        rows = sorted((r for r in points if r.method == method and value(r) is not None), key=lambda r: r.k)
        if rows:
            ys = [value(r) * scale for r in rows]
            shown += ys
            ax.plot([r.k for r in rows], ys, label=tables.METHOD_LABELS.get(method, method), **STYLE.get(method, {}))
    if baseline is not None:
        shown.append(baseline * scale)
        ax.axhline(baseline * scale, color="gray", linestyle="--", label="dense baseline")
    if shown and min(shown) == max(shown):  # one value everywhere (a float file's size under weight pruning):
        v = shown[0]  # give the axis a height, else matplotlib's bounding box is singular
        if v > 0:
            ax.set_ylim(v * 0.9, v * 1.1)
        else:
            ax.set_ylim(v - 1, v + 1)
    ax.set_xlabel("k: percent of weights (units, or group channels) pruned")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def histograms(points, baseline_hist, path, k=None):
    """Per-layer |w| histograms (log10 bins) before pruning and after, for each method at k (default: largest)."""
    if not baseline_hist:
        return None
    methods = tables.methods_in(points)
    ks = sorted({r.k for r in points if r.histograms})
    if not ks:
        return None
    k = k if k in ks else max(ks)
    layers = list(baseline_hist)
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.2), squeeze=False)
    edges = hist_lib.HIST_EDGES
    for ax, layer in zip(axes[0], layers):
        ax.stairs(baseline_hist[layer]["counts"], edges, fill=True, color="lightgray", label="before")
        for method in methods:
            rec = next((r for r in points if r.method == method and r.k == k and r.histograms), None)
            if rec and layer in rec.histograms:
                ax.stairs(rec.histograms[layer]["counts"], edges, color=STYLE.get(method, {}).get("color"),
                          label=f"{method} k={records.format_k(k)}")
        ax.set_title(layer)
        ax.set_xlabel("log10 |w| (non-zero weights)")
        ax.set_yscale("log")
    axes[0][0].set_ylabel("weights")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(f"Weight magnitudes before and after pruning at k = {records.format_k(k)} %", y=1.04)
    return _save(fig, path)


def sensitivity(curves, path, baseline=None):
    """One accuracy-vs-k curve per layer. ``curves``: {layer: [(k, accuracy), ...]}."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for layer, points in curves.items():
        points = sorted(points)
        ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=layer)
    if baseline is not None:
        ax.axhline(100 * baseline, color="gray", linestyle="--", label="dense baseline")
    ax.set_xlabel("k: percent of this layer pruned (others dense)")
    ax.set_ylabel("test accuracy %")
    ax.set_title("Per-layer pruning sensitivity")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def frontier(items, path, title="Which model to ship", limits=None, chosen=None, num_threads=1):
    """Accuracy against TFLite file size and against LiteRT latency (log scales), one marker per candidate
    (``frontier.Candidate``) coloured by method, the Pareto-optimal ones joined and named, the dense float and
    dense int8 files drawn as references. Returns ``(path, plotted)``: ``plotted`` lists per panel the
    ``(name, x, accuracy %)`` of every marker drawn, so callers can check the picture against the table.

    ``limits``: a budget search's {"size": KiB, "latency": ms, "accuracy": percent} (None = no limit), drawn as red
    lines; ``chosen``: the name of the candidate it ships, ringed in red; ``num_threads``: the latency's threads."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    plotted = {}
    refs = frontier_lib.references(items)
    for ax, (panel, cost, scale, xlabel) in zip(axes, (
            ("size", frontier_lib.size, 1 / 1024, "TFLite file size, KiB (log)"),
            ("latency", frontier_lib.latency, 1.0, f"LiteRT latency, ms per image, {num_threads} thread"
                                                   f"{'s' if num_threads > 1 else ''} (log)"))):
        front = frontier_lib.pareto(items, cost)
        plotted[panel] = [(c.name, cost(c) * scale, 100 * c.accuracy) for c in items]
        for method in dict.fromkeys(c.method for c in items):
            mine = [c for c in items if c.method == method]
            style = STYLE.get(method, {})
            ax.scatter([cost(c) * scale for c in mine], [100 * c.accuracy for c in mine], s=22, alpha=0.55,
                       marker=style.get("marker", "o"), color=style.get("color"),
                       label=tables.METHOD_LABELS.get(method, method))
        best = sorted((c for c in items if c.name in front), key=cost)
        ax.plot([cost(c) * scale for c in best], [100 * c.accuracy for c in best], color="black", linewidth=1,
                marker="o", markerfacecolor="none", markersize=9, label="Pareto frontier")
        for c in best:
            ax.annotate(c.name, (cost(c) * scale, 100 * c.accuracy), textcoords="offset points", xytext=(4, -9),
                        fontsize=6.5)
        for label, ref in refs.items():
            ax.axvline(cost(ref) * scale, color="gray", linestyle=":" if "int8" in label else "--", linewidth=1,
                       label=f"{label}: " + (f"{cost(ref) * scale:,.0f} KiB" if panel == "size" else
                                             f"{cost(ref) * scale:.3g} ms") + ", "
                             f"{100 * ref.accuracy:.2f} %")
        limits = limits or {}
        if limits.get(panel) is not None:
            ax.axvline(limits[panel], color="red", linewidth=1.2,
                       label=f"budget: {limits[panel]:g} {'KiB' if panel == 'size' else 'ms'}")
        if limits.get("accuracy") is not None:
            ax.axhline(limits["accuracy"], color="red", linestyle="--", linewidth=1,
                       label=f"budget: >= {limits['accuracy']:g} %")
        for c in items:
            if c.name == chosen:
                ax.scatter([cost(c) * scale], [100 * c.accuracy], s=160, facecolors="none", edgecolors="red",
                           linewidths=1.8, label=f"chosen: {c.name}")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy % (LiteRT, test images)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title)
    return _save(fig, path), plotted


def _float_file_size(point):
    figures = point.export("float")
    return None if figures is None else figures.size_bytes


def sweep_plots(points, output_dir, baseline_accuracy=None, baseline_loss=None, baseline_hist=None, prefix=""):
    """Writes the standard plots of a sweep into ``output_dir``; returns their paths."""
    paths = [
        metric_vs_k(points, lambda r: r.test_accuracy, "test accuracy %", "Accuracy vs sparsity",
                    os.path.join(output_dir, prefix + "accuracy_vs_k.png"), baseline_accuracy, scale=100),
        metric_vs_k(points, lambda r: r.test_loss, "test loss (cross-entropy)", "Loss vs sparsity",
                    os.path.join(output_dir, prefix + "loss_vs_k.png"), baseline_loss, logy=True),
    ]
    if any(r.gzip_size_bytes is not None for r in points):  # measured with gzip_size
        paths.append(metric_vs_k(points, lambda r: r.gzip_size_bytes, "gzipped weights, KiB", "Model size vs sparsity",
                                 os.path.join(output_dir, prefix + "size_vs_k.png"), scale=1 / 1024))
    else:
        paths.append(metric_vs_k(points, lambda r: r.remaining_weights, "nonzero kernel weights",
                                 "Model size vs sparsity", os.path.join(output_dir, prefix + "size_vs_k.png")))
    if any(_float_file_size(r) is not None for r in points):
        paths.append(metric_vs_k(points, _float_file_size, "TFLite float file, KiB", "TFLite size vs sparsity",
                                 os.path.join(output_dir, prefix + "tflite_size_vs_k.png"), scale=1 / 1024))
    hist = histograms(points, baseline_hist, os.path.join(output_dir, prefix + "weight_histograms.png"))
    return [p for p in paths + [hist] if p]


"""Which model to ship: every exported file of a sweep as a candidate, and the accuracy/size and accuracy/latency
Pareto frontiers over them.

A candidate is one TFLite file a sweep point exported: ``method`` x ``k`` x variant, of the pruned model or of its
physically shrunk copy. Its figures are those LiteRT measured on the file: accuracy on the export's test images,
file size in bytes and single-image latency (Interpreter, median). A candidate is on a frontier when no other is at
least as accurate and at most as costly with one of the two strictly better.
"""

import dataclasses

from tfprune.experiments.results import records


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One exported file: ``name`` (``block_1x4 k=90 float+sparse``, ``unit k=70 shrunk int8``), ``method``,
    ``k`` (percent), ``variant``, ``model`` (``pruned``/``shrunk``), ``accuracy`` (0..1), ``size_bytes``,
    ``latency_ms``, ``apis`` (the LiteRT APIs that ran it; None in old records)."""
    name: str
    method: str
    k: float
    variant: str
    model: str
    accuracy: float
    size_bytes: int
    latency_ms: float
    apis: str = None


def candidates(points):
    """Every exported file of ``points`` (``PointRecord``), in point order."""
    out = []
    for point in points:
        for e in point.exports:
            model = "" if e.model == records.PRUNED else f" {e.model}"  # " shrunk", " qat"
            out.append(Candidate(f"{point.method} k={records.format_k(point.k)}{model} {e.variant}", point.method,
                                 point.k, e.variant, e.model, e.accuracy, e.size_bytes, e.latency_ms, e.apis))
    return out


def pareto(items, cost):
    """The names of the candidates no other one dominates in (accuracy up, ``cost(candidate)`` down)."""
    front = set()
    for c in items:
        if not any(o.accuracy >= c.accuracy and cost(o) <= cost(c) and (o.accuracy > c.accuracy or cost(o) < cost(c))
                   for o in items):
            front.add(c.name)
    return front


def size(candidate):
    return candidate.size_bytes


def latency(candidate):
    return candidate.latency_ms


def references(items):
    """{"dense float": candidate, "dense int8": candidate} of the unpruned (k = 0) files present."""
    out = {}
    for c in items:
        if c.k == 0 and c.model == records.PRUNED and c.variant in ("float", "int8"):
            out.setdefault(f"dense {c.variant}", c)
    return out


def table(items):
    """Markdown: every candidate, most accurate first, with its figures and whether it is on each frontier."""
    by_size, by_latency = pareto(items, size), pareto(items, latency)
    lines = ["| candidate | accuracy % | file KiB | latency ms | size frontier | latency frontier | LiteRT APIs |",
             "|---|---:|---:|---:|:---:|:---:|---|"]
    for c in sorted(items, key=lambda c: (-c.accuracy, c.size_bytes, c.latency_ms, c.name)):
        lines.append(f"| {c.name} | {100 * c.accuracy:.2f} | {c.size_bytes / 1024:,.1f} | {c.latency_ms:.4f} | "
                     f"{'yes' if c.name in by_size else ''} | {'yes' if c.name in by_latency else ''} | "
                     f"{'both' if c.apis == 'interpreter,compiled_model' else c.apis or ''} |")
    return "\n".join(lines)


__all__ = ["Candidate", "candidates", "latency", "pareto", "references", "size", "table"]

"""Which model to ship under a device budget, as a library: search pruning families x k x TFLite variants, measured.

    from tfprune.experiments import BaselineConfig, Budget, FitBudgetConfig, run_fit_budget
    result = run_fit_budget(FitBudgetConfig("runs/budget", Budget(max_size_kib=100)))
    print(result.chosen.name, result.chosen_dir)

The search (``budget``'s walk, ``budget_export``'s probes):

1. The trained model is exported as it is (float, dynamic, int8): the dense references, and the scale of the
   predictions that choose where each walk starts.
2. Per-layer sensitivity (each candidate layer pruned alone, one-shot, at 50 and 90 %, on 2,000 validation
   images, or training images when the data has no validation split) picks the layers each method prunes: a layer
   whose accuracy drop exceeds ``max_drop`` points stays dense, unless it holds ``MIN_SHARE`` of the weights or
   more (a budget needs its bytes).
3. For every family (unit pruning + shrink, block 1x16, block 1x4, unstructured weight pruning) the ladder of k is
   walked from the predicted start; every probe prunes on TF-MOT's PolynomialDecay while fine-tuning (``finetune``),
   exports the family's variants and measures each file in LiteRT (accuracy on the test images, file size, median
   single-image latency at ``num_threads``, both LiteRT APIs).
4. The best file that fits (most accurate under a size/latency budget; smallest under an accuracy floor alone) is
   copied to ``chosen/`` (``model.tflite``, ``labels.txt``, ``model_card.json`` with the search's facts).

Every probe is a sweep point (``points/<method>-k<k>.json``, written atomically, files under ``candidates/``), so
a killed search resumes (``resume``) losing at most the probe in flight, and the same folder searched again under
another budget reuses every probe it already measured. ``candidates.md`` lists every file with its figures and
whether it fits; ``frontier.md``/``frontier.png`` draw them with the budget. A budget no file meets raises
``BudgetError`` naming the closest candidate, after writing those tables.
"""

import dataclasses
import os
import shutil
import time
from typing import Optional

from tfprune.files import io_utils
from tfprune.experiments.budget import search as budget_lib
from tfprune.experiments.budget import export as budget_export
from tfprune.experiments import config as config_lib
from tfprune.experiments.budget import frontier as frontier_lib
from tfprune.experiments.results import plots
from tfprune.experiments import point as point_lib
from tfprune.experiments import preflight
from tfprune.experiments.results import records
from tfprune.experiments import sensitivity
from tfprune.experiments.results import store as store_lib
from tfprune.experiments import sweep as sweep_lib
from tfprune.experiments.budget.search import Budget
from tfprune.experiments.config import BaselineConfig, ConfigError, FineTune

CANDIDATES = "candidates"
CHOSEN = "chosen"
SENSITIVITY_KS = (50.0, 90.0)
MIN_SHARE = 0.02  # a layer holding this share of the weights is pruned however sensitive: budgets need its bytes


class BudgetError(RuntimeError):
    """No candidate fits the budget; the message names the closest one and its figures."""


@dataclasses.dataclass(frozen=True)
class FitBudgetConfig:
    """A search to ``budget`` (``budget.Budget``), writing into ``output_dir``.

    families: of ``budget.FAMILIES`` (``unit``, ``block_1x16``, ``block_1x4``, ``weight``). ladder: the percents k a
    walk may probe. layers: the layers every method prunes (None: sensitivity picks them among each method's
    defaults, dropping small layers whose one-shot 50 or 90 % pruning costs more than ``max_drop`` points).
    finetune: the pruning-while-fine-tuning recipe of every probe; shrunk_epochs: further epochs of a unit probe's
    shrunk model. num_threads: LiteRT threads of every latency. eval_size: test images every file is measured on.
    export_softmax: a logits model's files end in a softmax (probabilities out). resume: reuse the probes already in
    ``output_dir`` (else they are an error).
    """
    output_dir: str
    budget: Budget
    baseline: BaselineConfig = BaselineConfig()
    families: tuple = budget_lib.DEFAULT_FAMILIES
    ladder: tuple = budget_lib.LADDER
    layers: Optional[tuple] = None
    finetune: FineTune = FineTune(epochs=2, verbose=0)
    shrunk_epochs: int = 10
    num_threads: int = 1
    eval_size: int = 10000
    max_drop: float = 2.0
    export_softmax: bool = False
    resume: bool = False

    def __post_init__(self):
        config_lib.SweepConfig(self.output_dir, self.baseline, layers=self.layers, finetune=self.finetune,  # checks
                               export=budget_lib.DENSE_VARIANTS)  # the k = 0 probe's; QAT finds its int8 there
        object.__setattr__(self, "families", budget_lib.check_families(self.families))
        ladder = tuple(sorted(config_lib.check_percents(self.ladder, "ladder")))
        if ladder[0] <= 0:
            raise ConfigError(f"ladder {list(self.ladder)}: k = 0 is the dense reference, always measured; give "
                              "percents > 0")
        object.__setattr__(self, "ladder", ladder)
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        if self.finetune.epochs < 1 or self.finetune.schedule == "oneshot":
            raise ConfigError("a budget search prunes while fine-tuning: finetune epochs must be >= 1 on the "
                              "polynomial or constant schedule")
        for name, minimum in (("shrunk_epochs", 0), ("num_threads", 1), ("eval_size", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} {value!r} must be an integer >= {minimum}")
        if not self.max_drop >= 0:
            raise ConfigError(f"max_drop {self.max_drop!r} must be a number >= 0")

    def result_fields(self):
        """The settings that change a probe's figures (the budget does not: a folder serves any budget)."""
        b, f = self.baseline, self.finetune
        return {"search": "fit_budget", "dataset": b.dataset, "model": b.model, "model_path": b.model_path,
                "train_epochs": b.train_epochs, "train_size": b.train_size, "batch_size": b.batch_size,
                "learning_rate": b.learning_rate, "seed": b.seed, "keras": b.keras, "finetune_epochs": f.epochs,
                "schedule": f.schedule, "begin_fraction": f.begin_fraction, "end_fraction": f.end_fraction,
                "pruning_frequency": f.frequency, "shrunk_epochs": self.shrunk_epochs,
                "num_threads": self.num_threads, "eval_size": self.eval_size, "max_drop": self.max_drop,
                "layers": None if self.layers is None else list(self.layers), "gzip_level": records.GZIP_LEVEL,
                **config_lib.calibration_fields([budget_lib.FAMILIES[f][0] for f in self.families],
                                                self.finetune.calibration_size), **config_lib.qat_fields(self.finetune),
                **({"export_softmax": True} if self.export_softmax else {})}  # absent when False: older folders resume


@dataclasses.dataclass(frozen=True)
class FitBudgetResult:
    """What ``run_fit_budget`` found: the chosen ``frontier.Candidate`` and the folder holding its file, every
    candidate measured, the probes run by this call (``(method, k)``; the others were read back), and the
    frontier plot's markers (``plots.frontier``'s ``plotted``)."""
    output_dir: str
    chosen: frontier_lib.Candidate
    chosen_dir: str
    candidates: tuple
    probes_run: tuple
    plotted: dict


def candidate_dir(output_dir, candidate):
    """The folder of a candidate's ``model.tflite``, ``labels.txt`` and ``model_card.json``."""
    return os.path.join(output_dir, CANDIDATES, records.point_key(candidate.method, candidate.k),
                        candidate.variant + records.model_suffix(candidate.model))


def _pruned_layers(config, model, data, report):
    """{method: layers it prunes}: the configured layers, or those sensitivity keeps (saved in sensitivity.json,
    read back on resume)."""
    methods = [budget_lib.FAMILIES[f][0] for f in config.families]
    if config.layers is not None:
        return {m: list(config.layers) for m in methods}
    path = os.path.join(config.output_dir, "sensitivity.json")
    saved = store_lib.read_json(path) if os.path.isfile(path) else {}
    x, y = (data.val or data.train).take(2000, config.baseline.seed)
    base_accuracy = None
    out, shares = {}, budget_export.weight_shares(model)
    for method in methods:
        if method not in saved:
            base_accuracy = base_accuracy if base_accuracy is not None else _accuracy(model, x, y)
            curves = sensitivity.scan(model, x, y, SENSITIVITY_KS, method)
            saved[method] = {name: [100 * (base_accuracy - a) for _, a, _ in points] for name, points in curves.items()}
            io_utils.write_json_atomic(path, saved)
        drops = saved[method]
        out[method] = [n for n, d in drops.items() if max(d) <= config.max_drop or shares[n] >= MIN_SHARE]
        dense = [n for n in drops if n not in out[method]]
        report(f"sensitivity, {method} (each layer alone, one-shot at {'/'.join(f'{k:g}' for k in SENSITIVITY_KS)} "
               "%, accuracy drop in points): " + ", ".join(f"{n} " + "/".join(f"{v:+.2f}" for v in d)
                                                         for n, d in drops.items())
               + f"; pruned: {', '.join(out[method])}"
               + (f"; dense (sensitive and < {MIN_SHARE:.0%} of the weights): {', '.join(dense)}" if dense else ""))
    return out


def _accuracy(model, x, y):
    from tfprune.experiments import models  # pylint: disable=g-import-not-at-top
    copy = models.compile_model(point_lib.clone_with_weights(model))
    return float(copy.evaluate(x, y, batch_size=1024, verbose=0)[1])


class _Prober:
    """Runs (or reads back) one probe, writes it, reports it; ``on_probe(event, method, k)`` sees ``start`` and
    ``done`` of every probe run (tests aim faults with it)."""

    def __init__(self, config, base_model, data, layers, exporter, digest, report, on_probe):
        self.config, self.base_model, self.data, self.layers = config, base_model, data, layers
        self.exporter, self.digest, self.report, self.on_probe = exporter, digest, report, on_probe
        self.store = store_lib.ResultStore(config.output_dir)
        self.run, self.best, self.count = [], None, 0

    def candidates(self, method, k):
        path = self.store.path(method, k)
        finished, problem = store_lib.finished_point(path, self.digest)
        if problem:
            os.replace(path, path + sweep_lib.REJECTED_SUFFIX)
            self.report(f"{problem}; probing it again (kept as {os.path.basename(path)}{sweep_lib.REJECTED_SUFFIX})")
        if finished:
            record = store_lib.read_point(path)
        else:
            record = self._probe(method, k)
        items = frontier_lib.candidates([record])
        self.count += 1
        self.best = budget_lib.choose(([self.best] if self.best else []) + items, self.config.budget)
        self.report(f"[probe {self.count}] {records.point_key(method, k)}{'' if not finished else ' (done before)'}: "
                    + "; ".join(_figures(c, self.config.budget) for c in items)
                    + f" | best so far: {_figures(self.best, self.config.budget) if self.best else 'none fits'}")
        return items

    def _probe(self, method, k):
        if self.on_probe:
            self.on_probe("start", method, k)
        finetune = self.config.finetune if k else dataclasses.replace(self.config.finetune, epochs=0)
        layers = self.layers[method] if k else None
        record = point_lib.run_point(self.base_model, self.data, method, k, layers=layers, finetune=finetune,
                                     exporter=self.exporter, histograms=False, seed=self.config.baseline.seed)
        record = dataclasses.replace(record, data_digest=self.data.digest(), config_digest=self.digest)
        self.store.write_point(record)
        self.run.append((method, k))
        if self.on_probe:
            self.on_probe("done", method, k)
        return record


def _figures(c, budget):
    mark = "fits" if budget.fits(c) else "no"
    return (f"{c.name} {100 * c.accuracy:.2f} % {c.size_bytes / 1024:,.1f} KiB {c.latency_ms:.4f} ms ({mark})")


def run_fit_budget(config, report=print, on_probe=None, command=None):
    """Runs (or resumes) the search of ``config`` (``FitBudgetConfig``) and writes its files.

    Args:
      report: called with every progress line.
      on_probe: optional ``(event, method, k)`` callback, ``event`` ``"start"`` or ``"done"`` for every probe run.
      command: the command line candidates.md shows ("Produced by"), or None.

    Returns:
      ``FitBudgetResult``.

    Raises:
      ConfigError: before any work: probes in ``output_dir`` without ``resume``, a folder made with other settings,
        a layer the model lacks, an unusable model file. DatasetError: the data cannot be found or is corrupt.
      BudgetError: no candidate fits (after every family was walked and the tables were written).
    """
    b = config.baseline
    data = sweep_lib.load_data(b)
    report(data.describe())
    start_model = sweep_lib.load_start_model(b, data, None, report, data.digest()) if b.model_path else None
    shapes = start_model[0].model if start_model else preflight.architecture(b, data)
    methods = tuple(budget_lib.FAMILIES[f][0] for f in config.families)
    preflight.check_sweep(config_lib.SweepConfig(config.output_dir, b, methods=methods, sparsities=config.ladder,
                                                 layers=config.layers), shapes)
    with store_lib.output_lock(config.output_dir):
        return _run_locked(config, data, start_model, report, on_probe, command)


def _run_locked(config, data, start_model, report, on_probe, command):
    b = config.baseline
    fields = dict(config.result_fields(), model_sha256=start_model[1] if start_model else None,
                  data_sha256=data.digest())
    refusal = store_lib.check_same_config(config.output_dir, fields)
    if refusal:
        raise ConfigError(refusal)
    done = store_lib.load_points([config.output_dir])
    if done and not config.resume:
        raise ConfigError(f"--output_dir {config.output_dir!r} already holds {len(done)} probes (e.g. {done[0].key});"
                          " pass --resume (resume=True) to reuse them, or another folder")
    # chosen/ is a copy of the file an earlier search of this folder chose (under candidates/, kept): it must not
    # outlive this search's own answer.
    shutil.rmtree(os.path.join(config.output_dir, CHOSEN), ignore_errors=True)
    base, _ = start_model or sweep_lib.load_start_model(b, data, None, report, data.digest())
    report(f"baseline {b.label} on {b.dataset}: test accuracy {100 * base.test_accuracy:.2f} %; budget: "
           f"{config.budget.describe(config.num_threads)}")
    start = time.perf_counter()
    x_eval, y_eval = data.test.take(config.eval_size, b.seed)
    exporter = budget_export.BudgetExporter(
        x_eval, y_eval, data.train.take(300, b.seed)[0], os.path.join(config.output_dir, CANDIDATES), data.train,
        config.shrunk_epochs, config.finetune.batch_size, config.finetune.learning_rate, b.seed,
        labels=list(data.class_names), data_card=data.card(), num_threads=config.num_threads,
        append_softmax=config.export_softmax)
    prober = _Prober(config, base.model, data, None, exporter, store_lib.config_digest(fields), report, on_probe)
    dense = prober.candidates("weight", 0.0)
    prober.layers = _pruned_layers(config, base.model, data, report)
    for family in config.families:
        method = budget_lib.FAMILIES[family][0]
        predict = budget_export.predictor(base.model, dense, family, prober.layers[method], config.ladder)
        fits = budget_export.predicted_fit(predict, config.budget) if config.budget.has_cost else None
        first = budget_lib.start_index(fits, config.ladder)
        report(f"{family}: walk starts at k={config.ladder[first]:g} (predicted: "
               f"{budget_export.describe_prediction(predict, config.ladder[first])})")
        budget_lib.walk(lambda k, m=method: budget_lib.probe_ok(prober.candidates(m, k), config.budget),
                        first, config.budget.has_cost, config.ladder)
    items = frontier_lib.candidates(store_lib.load_points([config.output_dir]))
    chosen = budget_lib.choose(items, config.budget)
    plotted = _write_tables(config, items, chosen, command)
    seconds = time.perf_counter() - start
    if chosen is None:
        near = budget_lib.closest(items, config.budget)
        raise BudgetError(f"no candidate meets the budget ({config.budget.describe(config.num_threads)}) after "
                          f"{len(items)} files; the closest is {_figures(near, config.budget)} "
                          f"({candidate_dir(config.output_dir, near)}); see {config.output_dir}/candidates.md")
    chosen_dir = _ship(config, chosen, seconds, len(items))
    report(f"chosen: {_figures(chosen, config.budget)} -> {chosen_dir}/model.tflite ({len(prober.run)} probes run, "
           f"{len(items)} files measured, {seconds:.0f} s); tables: {config.output_dir}/candidates.md, frontier.png")
    return FitBudgetResult(config.output_dir, chosen, chosen_dir, tuple(items), tuple(prober.run), plotted)


def _write_tables(config, items, chosen, command):
    budget = config.budget
    lines = [f"# Budget search: {budget.describe(config.num_threads)}", ""]
    if command:
        lines += ["Produced by:", "", "```sh", command, "```", ""]
    lines += [
             f"{config.baseline.label} on {config.baseline.dataset}. Every file the search measured (LiteRT: accuracy "
             f"on {config.eval_size} test images, median single-image latency at {config.num_threads} thread(s)), "
             "the best first.", "", "| candidate | accuracy % | file KiB | latency ms | fits | LiteRT APIs |",
             "|---|---:|---:|---:|:---:|---|"]
    ordered = sorted(items, key=lambda c: (not budget.fits(c), -c.accuracy, c.size_bytes, c.name))
    for c in ordered:
        mark = "**chosen**" if chosen is not None and c.name == chosen.name else ("yes" if budget.fits(c) else "")
        lines.append(f"| {c.name} | {100 * c.accuracy:.2f} | {c.size_bytes / 1024:,.1f} | {c.latency_ms:.4f} | "
                     f"{mark} | {'both' if c.apis == 'interpreter,compiled_model' else c.apis or ''} |")
    io_utils.write_text_atomic(os.path.join(config.output_dir, "candidates.md"), "\n".join(lines) + "\n")
    limits = {"size": budget.max_size_kib, "latency": budget.max_latency_ms, "accuracy": budget.min_accuracy}
    _, plotted = plots.frontier(items, os.path.join(config.output_dir, "frontier.png"),
                   title=f"Budget search: {budget.describe(config.num_threads)}", limits=limits,
                   chosen=None if chosen is None else chosen.name, num_threads=config.num_threads)
    io_utils.write_text_atomic(os.path.join(config.output_dir, "frontier.md"), "\n".join([
        "# Which model to ship: accuracy against file size and latency", "",
        "Every file of this budget search; on a frontier: no other file is at least as accurate and at most as "
        "large (or as slow). Plot: frontier.png.", "", frontier_lib.table(items), ""]))
    return plotted


def _ship(config, chosen, seconds, count):
    """Copies the chosen file with its labels into ``chosen/``; its card gains the search's facts."""
    source, target = candidate_dir(config.output_dir, chosen), os.path.join(config.output_dir, CHOSEN)
    card = store_lib.read_json(os.path.join(source, "model_card.json"))
    card["budget_search"] = {"budget": dataclasses.asdict(config.budget), "num_threads": config.num_threads,
                             "candidate": chosen.name, "candidates_measured": count, "source": source,
                             "search_seconds": round(seconds, 1)}
    os.makedirs(target, exist_ok=True)
    for name in ("model.tflite", "labels.txt"):
        tmp = os.path.join(target, name + ".tmp")
        shutil.copyfile(os.path.join(source, name), tmp)
        os.replace(tmp, os.path.join(target, name))
    io_utils.write_json_atomic(os.path.join(target, "model_card.json"), card)
    return target


__all__ = ["BudgetError", "FitBudgetConfig", "FitBudgetResult", "candidate_dir", "run_fit_budget"]

"""What a study runs, as frozen dataclasses: the trained model it starts from, the fine-tuning recipe, the sweep.

The command line builds these from its flags (one field per flag, same names); Python callers build them
directly. Every value is checked when the object is made, so a bad setting is one ``ConfigError`` naming the
field and the value, before any work. Sparsities are percents k in [0, 100) here, as on the command line, because
they name points (``weight-k90``); the pruning library itself takes fractions.
"""

import dataclasses
import math
import os
import re
from typing import Optional

from tfprune.select import scoring
from tfprune import stacks
from tfprune.experiments.data import sources as data_sources
from tfprune.experiments.results import records
from tfprune.tflite import convert

# TF-MOT's prune_low_magnitude: unstructured, and in blocks (block_size of the Keras kernel (inputs, units), i.e.
# tfprune's block_1x4 and block_1x16 in TFLite's (units x inputs) layout).
TFMOT_BLOCK_SIZES = {"tfmot": (1, 1), "tfmot_block_1x4": (4, 1), "tfmot_block_1x16": (16, 1)}
# TF-MOT's sparsity_m_by_n: tfmot_nm_<n>x<m> keeps n of every m, as tfprune's nm_<n>x<m> (any valid pattern runs).
TFMOT_NM_METHODS = ("tfmot_nm_2x4",)
SWEEP_METHODS = scoring.METHODS + tuple(TFMOT_BLOCK_SIZES) + TFMOT_NM_METHODS  # the named ones; any block shape runs
_TFMOT_NM = re.compile(r"tfmot_(nm_[1-9][0-9]*x[1-9][0-9]*)")


def tfmot_nm_method(method):
    """The tfprune N:M method (``nm_2x4``) whose TF-MOT counterpart ``method`` (``tfmot_nm_2x4``) is, else None."""
    match = _TFMOT_NM.fullmatch(str(method))
    if match is None or not scoring.is_method(match.group(1)):
        return None
    return match.group(1)


def tfmot_m_by_n(method):
    """TF-MOT's ``sparsity_m_by_n`` of ``tfmot_nm_<n>x<m>``: ``(m - n, m)`` (TF-MOT counts zeros), else None."""
    nm_method = tfmot_nm_method(method)
    if nm_method is None:
        return None
    n, m = scoring.check_method(nm_method).pattern
    return (m - n, m)


def is_tfmot(method):
    """True for the TF-MOT methods of a sweep (``tfmot``, ``tfmot_block_1x4``, ``tfmot_block_1x16``,
    ``tfmot_nm_<n>x<m>``)."""
    return method in TFMOT_BLOCK_SIZES or tfmot_nm_method(method) is not None


def tfmot_block_size(method):
    """TF-MOT's ``block_size`` of a TF-MOT method: (1, 1) for the unstructured and N:M ones."""
    return TFMOT_BLOCK_SIZES.get(method, (1, 1))


def is_sweep_method(method):
    """True for a method a sweep runs: a tfprune method (``scoring.is_method``) or a TF-MOT one (``is_tfmot``)."""
    return is_tfmot(method) or scoring.is_method(method)
SCHEDULES = ("oneshot", "polynomial", "constant")
DEFAULT_SPARSITIES = (0.0, 25.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 97.0, 99.0)


class ConfigError(ValueError):
    """A setting that cannot work, found before any work (the command line reports it as a usage error, exit 2)."""


def check_unique(values, what, key=None, noun=""):
    """``values`` as a list, once no entry repeats (two entries repeat when ``key`` of them, default the entries
    themselves, is equal: ``key=float`` makes ``50`` and ``50.0`` one percent).

    Raises:
      ConfigError: ``"<what>: <noun> 'fc1' appears twice (fc1=90, fc1=10)"``: the first repeated entry (its key when
        that is a name, else the entry as given) and, when they differ, the entries that share it.
    """
    values = list(values)
    keys = [v if key is None else key(v) for v in values]
    for i, k in enumerate(keys):
        if k in keys[:i]:
            entries = [str(v) for v, other in zip(values, keys) if other == k]
            name = repr(k) if isinstance(k, str) else str(values[i])
            shown = f" ({', '.join(entries)})" if len(set(entries)) > 1 else ""
            raise ConfigError(f"{what}: {noun + ' ' if noun else ''}{name} appears twice{shown}")
    return values


def check_methods(methods, what="--methods"):
    """The sweep methods as a tuple: non-empty, each known (``is_sweep_method``), none repeated.

    Raises:
      ConfigError: naming the empty list, the unknown method (with the known ones) or the repeated one.
    """
    methods = tuple(check_unique(methods, what, noun="method"))
    if not methods:
        raise ConfigError(f"{what} is empty; give at least one of {', '.join(SWEEP_METHODS)}")
    for method in methods:
        if not is_sweep_method(method):
            raise ConfigError(f"{what}: unknown method {method!r}; known: {', '.join(SWEEP_METHODS)} (or other block "
                              "shapes, block_<units>x<inputs>, or N:M patterns, nm_<n>x<m>, tfmot_nm_<n>x<m>)")
    return methods


def check_variants(variants, what="--export"):
    """TFLite variant names as a tuple: each known (``convert.VARIANTS``), none repeated (ConfigError naming it)."""
    variants = tuple(check_unique(variants, what, noun="variant"))
    bad = [v for v in variants if v not in convert.VARIANTS]
    if bad:
        raise ConfigError(f"{what}: unknown variant(s) {bad}; known: {', '.join(convert.VARIANTS)}")
    return variants


def check_percents(values, what="sparsities"):
    """Parses a list of percents into floats in [0, 100), in the given order.

    Raises:
      ConfigError: naming ``what`` and the bad value: not a number, outside [0, 100), duplicates, empty list.
    """
    if not values:
        raise ConfigError(f"{what} is empty; give at least one percent, e.g. 0,50,90")
    out = []
    for value in values:
        try:
            k = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: {value!r} is not a number (percent in [0, 100))") from None
        if not 0.0 <= k < 100.0:
            raise ConfigError(f"{what}: {value} is outside [0, 100) (a percent: 100 would delete every weight)")
        out.append(k)
    check_unique(values, what, key=float)
    return out


def _check(condition, message):
    if not condition:
        raise ConfigError(message)


def _library(check, *args):
    """Runs a library check (``scoring.check_scope``...), its ValueError as a ConfigError."""
    try:
        return check(*args)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _positive_int(value, name, minimum=1):
    _check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
           f"{name} {value!r} must be an integer >= {minimum}")


DEFAULT_CALIBRATION_SIZE = 1024
DEFAULT_QAT_LEARNING_RATE = 1e-4  # a tenth of the fine-tuning rate: QAT adjusts trained weights to the int8 grid


def calibration_fields(methods, calibration_size):
    """{"calibration_size": n} when a method reads calibration data, else {} (folders of other methods resume)."""
    return {"calibration_size": calibration_size} if any(map(scoring.needs_calibration, methods)) else {}


def int8_variants(variants):
    """The full-integer TFLite variants of ``variants`` (``int8``, ``int8+sparse``): the ones QAT exports."""
    return [v for v in variants if convert.parse_variant(v)[0] == "int8"]


def qat_fields(finetune):
    """{"qat_epochs": n, "qat_learning_rate": r} when QAT runs, else {} (folders without QAT resume)."""
    if not finetune.qat_epochs:
        return {}
    return {"qat_epochs": finetune.qat_epochs, "qat_learning_rate": finetune.qat_learning_rate}


@dataclasses.dataclass(frozen=True)
class FineTune:
    """How a pruned model is fine-tuned (identical for every method).

    epochs: fine-tune epochs; 0 = one-shot prune and evaluate (the classic experiment; not possible for tfmot).
    schedule: ``oneshot`` (prune at step 0, masks fixed), ``polynomial`` (TF-MOT PolynomialDecay from 0 to the
      target between ``begin_fraction`` and ``end_fraction`` of the fine-tune steps), ``constant`` (TF-MOT
      ConstantSparsity from ``begin_fraction``).
    frequency: pruning steps between mask updates of the polynomial/constant schedules.
    calibration_size: training examples (a fixed-seed subset of the train split, never the test split) the
      calibration methods read (``wanda``, ``taylor``, ``sparsegpt``, ``unit_refit``...; ``scoring.needs_calibration``).
    qat_epochs: after fine-tuning, epochs of sparsity-preserving quantization-aware training of the model a point
      ships (``tfprune.quantization``; 0: none), at ``qat_learning_rate`` (Adam), same batch size; its int8 files
      are exported beside the point's others.
    """
    epochs: int = 0
    schedule: str = "polynomial"
    batch_size: int = 128
    learning_rate: float = 1e-3
    begin_fraction: float = 0.0
    end_fraction: float = 0.7
    frequency: int = 100
    verbose: int = 2
    calibration_size: int = DEFAULT_CALIBRATION_SIZE
    qat_epochs: int = 0
    qat_learning_rate: float = DEFAULT_QAT_LEARNING_RATE

    def __post_init__(self):
        _positive_int(self.calibration_size, "calibration_size")
        if self.qat_epochs < 0:
            raise ConfigError(f"QAT epochs {self.qat_epochs} must be >= 0")
        if not (math.isfinite(self.qat_learning_rate) and self.qat_learning_rate > 0):
            raise ConfigError(f"QAT learning rate {self.qat_learning_rate} must be a finite number > 0")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule {self.schedule!r} is not one of {SCHEDULES}")
        if self.epochs < 0:
            raise ConfigError(f"fine-tune epochs {self.epochs} must be >= 0")
        if not 0.0 <= self.begin_fraction <= self.end_fraction <= 1.0:
            raise ConfigError(f"begin_fraction {self.begin_fraction} and end_fraction {self.end_fraction} must "
                              "satisfy 0 <= begin <= end <= 1")

    def steps(self, num_examples):
        """(begin_step, end_step, total_steps, frequency) of the schedule for ``num_examples`` training images.

        ``frequency`` is ``self.frequency``, lowered on short runs so the ramp still has ~10 mask updates; the ramp
        ``end_step - begin_step`` is rounded down to a multiple of it, so the last update applies the target
        exactly (TF-MOT prunes only at ``begin + i * frequency``).
        """
        total = self.epochs * math.ceil(num_examples / self.batch_size)
        begin = int(self.begin_fraction * total)
        ramp = max(1, int(self.end_fraction * total) - begin)
        frequency = max(1, min(self.frequency, ramp // 10))
        return begin, begin + max(1, ramp // frequency) * frequency, total, frequency

    def tfmot_schedule(self, sparsity, num_examples):
        """The TF-MOT PruningSchedule both tfprune and TF-MOT follow at this target sparsity (fraction)."""
        from tfprune.experiments import tfmot_method  # pylint: disable=g-import-not-at-top (TF-MOT is heavy)
        begin, end, _, frequency = self.steps(num_examples)
        kind = "constant" if self.schedule == "constant" else "polynomial"
        return tfmot_method.make_schedule(kind, sparsity, begin, end if kind == "polynomial" else -1, frequency)


@dataclasses.dataclass(frozen=True)
class BaselineConfig:
    """The data and the trained model a study starts from.

    dataset, data_dir: see ``tfprune.load_data`` (``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``,
    ``npz:PATH``, ``images:DIR``); data_memory_mib: image folders whose decoded images exceed this many MiB stream
    from their files instead of being held in memory. model_path: a user's ``.keras``/``.h5`` file, used instead of
    training the reference model ``model``; allow_unsafe: load it even if it holds code. train_epochs, batch_size,
    learning_rate, seed, train_size: the reference model's training recipe (Adam); ``train_size`` also subsets the
    fine-tuning data. cache_dir: where trained reference models are cached. verbose: Keras' training output.
    keras: which Keras builds the reference model, ``"2"`` (tf_keras) or ``"3"`` (Keras 3, on its configured
    backend); a ``model_path`` file is always loaded with the Keras that wrote it.
    """
    dataset: str = "fashion_mnist"
    data_dir: Optional[str] = None
    model: str = "fc_1000"
    model_path: Optional[str] = None
    allow_unsafe: bool = False
    train_epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 1e-3
    seed: int = 0
    train_size: Optional[int] = None
    cache_dir: Optional[str] = None
    verbose: int = 2
    keras: str = "2"
    data_memory_mib: int = 4096

    def __post_init__(self):
        object.__setattr__(self, "keras", str(self.keras))
        _library(data_sources.parse, self.dataset)
        _positive_int(self.data_memory_mib, "data_memory_mib")
        _library(stacks.by_version, self.keras)
        _positive_int(self.train_epochs, "train_epochs")
        _positive_int(self.batch_size, "batch_size")
        _check(self.learning_rate > 0 and math.isfinite(self.learning_rate),
               f"learning_rate {self.learning_rate!r} must be a finite number > 0")
        if self.train_size is not None:
            _positive_int(self.train_size, "train_size")
        _check(self.model_path is None or os.path.exists(self.model_path),
               f"model_path {self.model_path!r} does not exist")

    @property
    def label(self):
        """How tables name the model: the file's path, or the reference model's name."""
        return self.model_path or self.model


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A sweep over methods × k (or one per-layer plan), writing into ``output_dir``.

    methods: of ``SWEEP_METHODS``. sparsities: percents k in [0, 100) (ignored when ``layer_sparsity`` is given).
    layers: layer names to prune (None: the method's defaults). layer_sparsity: a per-layer plan
    {layer: fraction} instead of ``sparsities``. scope: ``layer`` or ``global``. finetune: the ``FineTune``
    recipe. export: TFLite variants to export per point; export_eval_size: test images verifying them;
    export_softmax: a logits model's files end in a softmax (probabilities out). gzip_size: measure each point's
    weights gzipped (``records.GZIP_LEVEL``). resume:
    skip points already in ``output_dir``. num_shards, shard_index: run every num_shards-th point only.
    """
    output_dir: str
    baseline: BaselineConfig = BaselineConfig()
    methods: tuple = ("weight", "unit")
    sparsities: tuple = DEFAULT_SPARSITIES
    layers: Optional[tuple] = None
    layer_sparsity: Optional[dict] = None
    scope: str = "layer"
    finetune: FineTune = FineTune()
    export: tuple = ()
    export_eval_size: int = 2000
    export_softmax: bool = False
    gzip_size: bool = False
    resume: bool = False
    num_shards: int = 1
    shard_index: int = 0

    def __post_init__(self):
        _check(bool(self.output_dir), f"output_dir {self.output_dir!r} is empty; name a folder for the results")
        methods = check_methods(self.methods, "methods")
        object.__setattr__(self, "methods", methods)
        object.__setattr__(self, "sparsities", tuple(check_percents(self.sparsities)))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(check_unique(self.layers, "layers", noun="layer")))
        _library(scoring.check_scope, self.scope)
        tfmot = [m for m in methods if is_tfmot(m)]
        _check(not (tfmot and self.finetune.epochs < 1),
               f"--methods={tfmot[0] if tfmot else ''} needs --finetune_epochs >= 1 (TF-MOT applies its masks during "
               "training)")
        _check(not (tfmot and self.scope != "layer"),
               f"--methods={tfmot[0] if tfmot else ''} supports --scope=layer only")
        _positive_int(self.export_eval_size, "export_eval_size")
        _positive_int(self.num_shards, "num_shards")
        _check(0 <= self.shard_index < self.num_shards, "--shard_index must be < --num_shards")
        object.__setattr__(self, "export", check_variants(self.export, "export"))
        _check(not self.finetune.qat_epochs or int8_variants(self.export),
               f"--qat_epochs={self.finetune.qat_epochs} needs an int8 TFLite variant in --export (int8 or "
               f"int8+sparse; got {','.join(self.export) or 'none'}): QAT's figures are its int8 files'")

    def result_fields(self):
        """The settings that change a point's figures, under the names of their flags (sweep_config.json): a
        folder holding points made with other values must not take new ones."""
        b, f = self.baseline, self.finetune
        return {"dataset": b.dataset, "model": b.model, "model_path": b.model_path, "train_epochs": b.train_epochs,
                "train_size": b.train_size, "batch_size": b.batch_size, "learning_rate": b.learning_rate,
                "seed": b.seed, "layers": None if self.layers is None else list(self.layers), "scope": self.scope,
                "finetune_epochs": f.epochs, "schedule": f.schedule, "begin_fraction": f.begin_fraction,
                "end_fraction": f.end_fraction, "pruning_frequency": f.frequency, "export": list(self.export),
                "export_eval_size": self.export_eval_size, "layer_sparsity": self.layer_sparsity,
                "keras": None if b.model_path else stacks.by_version(b.keras).label,
                "gzip_level": records.GZIP_LEVEL if self.gzip_size else None,
                **calibration_fields(self.methods, f.calibration_size), **qat_fields(f),
                **({"export_softmax": True} if self.export_softmax else {})}  # absent when False: older folders resume


@dataclasses.dataclass(frozen=True)
class SensitivityConfig:
    """A per-layer sensitivity scan: each layer pruned alone at every k, the others dense.

    method: ``weight`` or ``unit``. sparsities: percents k. layers: names to scan (None: the method's defaults).
    max_drop: accuracy drop in percentage points a layer's planned k may cost. eval_size: evaluate on a fixed subset
    of this many examples of the validation split (None: all); data without one is scanned on 10,000 (or
    ``eval_size``) training examples, never on the test split, which stays for unbiased final figures.
    calibration_size: as ``FineTune.calibration_size``. An N:M method (``nm_2x4``) has one k besides 0,
    ``100·(1 - n/m)``: with the default sparsities it scans that k (each layer with the pattern or dense), and the
    plan says which layers take the pattern; other k's are refused.
    """
    output_dir: str
    baseline: BaselineConfig = BaselineConfig()
    method: str = "weight"
    sparsities: tuple = DEFAULT_SPARSITIES
    layers: Optional[tuple] = None
    max_drop: float = 1.0
    eval_size: Optional[int] = None
    calibration_size: int = DEFAULT_CALIBRATION_SIZE

    def __post_init__(self):
        _positive_int(self.calibration_size, "calibration_size")
        _check(bool(self.output_dir), f"output_dir {self.output_dir!r} is empty; name a folder for the results")
        scorer = _library(scoring.check_method, self.method)
        if scorer.fixed_sparsity is not None and tuple(self.sparsities) == DEFAULT_SPARSITIES:
            object.__setattr__(self, "sparsities", (0.0, 100.0 * scorer.fixed_sparsity))
        object.__setattr__(self, "sparsities", tuple(check_percents(self.sparsities)))
        for k in self.sparsities:
            try:
                scorer.check_sparsity(k / 100.0)
            except ValueError as e:
                raise ConfigError(f"--sparsities: k = {records.format_k(k)} %: {e}") from None
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(self.layers))
        _check(self.max_drop >= 0 and math.isfinite(self.max_drop),
               f"max_drop {self.max_drop!r} must be a finite number >= 0")
        if self.eval_size is not None:
            _positive_int(self.eval_size, "eval_size")


__all__ = ["BaselineConfig", "ConfigError", "DEFAULT_SPARSITIES", "FineTune", "SCHEDULES", "SWEEP_METHODS",
           "TFMOT_BLOCK_SIZES", "TFMOT_NM_METHODS", "is_sweep_method", "is_tfmot", "tfmot_block_size", "tfmot_m_by_n",
           "tfmot_nm_method",
           "SensitivityConfig", "SweepConfig", "check_percents"]

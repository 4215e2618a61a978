"""The record of one finished sweep point, typed, with its JSON form (versioned) and its flat table row.

A point file (``points/<method>-k<k>.json``) holds ``PointRecord.to_json()``. Reading one is strict: a missing or
unknown field, a wrong type or an unknown format version is a ``RecordError`` naming the file and the field, never
a silently degraded table. Files written before the format was versioned (format 1: one flat dict, exported
variants as ``tflite_<variant>_<figure>`` keys) are read and converted.
"""

import dataclasses
import numbers
from typing import Optional

# Level of the gzip size a point records (``gzip_size_bytes``): 6, gzip's own default (docs/DESIGN_NOTES.md, "gzip
# level"). The level is a result setting (``sweep_config.json``): folders written at level 9 are not resumed at 6.
GZIP_LEVEL = 6

FORMAT_VERSION = 2
PRUNED, SHRUNK = "pruned", "shrunk"  # which model of a point an exported variant comes from
QAT = "qat"  # the point's shipped model (shrunk if it was, else pruned) after quantization-aware training


class RecordError(ValueError):
    """A point record that cannot be read: the message names the file (or source) and the field."""


def model_suffix(model):
    """What a point's export folder of ``model`` adds to the variant: ``""`` (pruned), ``-shrunk``, ``-qat``."""
    return "" if model == PRUNED else f"-{model}"


def format_k(k):
    """A percent (or any number) written exactly and shortest: ``90``, ``97.5``, ``50.0000001``, ``99.99999``.

    Unlike ``{k:g}`` (6 significant digits) two different numbers never print alike, so point names, table rows
    and cache keys built from it never collide.
    """
    text = repr(float(k))
    return text[:-2] if text.endswith(".0") else text


def point_key(method, k):
    """File stem of a point: ``weight-k90``, ``unit-k97.5``, ``weight-k50.0000001`` (exact, collision-free)."""
    return f"{method}-k{format_k(k)}"


@dataclasses.dataclass(frozen=True)
class VariantFigures:
    """One exported TFLite variant of a point, as LiteRT measured it (``tfprune.tflite.export_variant``).

    model: ``pruned`` (the point's model), ``shrunk`` (its physically shrunk copy, unit points) or ``qat`` (the
    shipped one after quantization-aware training, ``QATFigures``). size_bytes,
    gzip_size_bytes: the ``.tflite`` file; accuracy (0..1), loss: on the export's test images; latency_ms,
    latency_p90_ms: single-image invoke, median and 90th percentile; path: ``xnnpack`` or ``builtin``;
    sparsity: fraction of zero kernel weights; convert_seconds: conversion time; apis: the LiteRT APIs that ran the
    file (``interpreter,compiled_model``); compiled_latency_ms: CompiledModel's median; kernels: the kernels running
    its weighted operators; keras_max_abs_diff: the Interpreter's largest probability difference to Keras. The last
    four are None in records written before tfprune measured them.
    """
    variant: str
    size_bytes: int
    gzip_size_bytes: int
    accuracy: float
    loss: float
    latency_ms: float
    latency_p90_ms: float
    path: str
    fallback_reason: str
    sparsity: float
    convert_seconds: float
    model: str = PRUNED
    apis: Optional[str] = None
    compiled_latency_ms: Optional[float] = None
    kernels: Optional[str] = None
    keras_max_abs_diff: Optional[float] = None

    @property
    def column(self):
        """The variant's name in flat table columns: ``int8_sparse``, ``shrunk_float``."""
        name = self.variant.replace("+sparse", "_sparse")
        return name if self.model == PRUNED else f"{self.model}_{name}"

    @property
    def label(self):
        """The variant's name in table headers: ``int8+sparse``, ``shrunk float``."""
        return self.variant if self.model == PRUNED else f"{self.model} {self.variant}"


@dataclasses.dataclass(frozen=True)
class ShrinkFigures:
    """A unit point's physically shrunk model: parameters and MACs per example before and after, the number of
    dead-unit groups kept for safety, and the largest output difference to the unshrunk model."""
    dense_params: int
    shrunk_params: int
    dense_macs: int
    shrunk_macs: int
    kept_notes: int
    max_abs_diff: float


@dataclasses.dataclass(frozen=True)
class QATFigures:
    """A point's sparsity-preserving quantization-aware training (``--qat_epochs``) of the model it ships.

    model: which model was trained (``pruned``, or ``shrunk`` for a unit or group point); epochs, learning_rate,
    seconds_per_epoch (median); accuracy (0..1), loss: the QAT Keras model (fake-quantized) on the whole test set;
    quantized_layers: layers whose kernels trained fake-quantized; zeros: zero kernel weights before QAT;
    zeros_kept: the same weights, and no other, are zero after QAT; int8_zeros_kept: every one of them is zero in
    the int8 file (decoded); int8_extra_zeros: weights that int8 rounding also turned to zero (|w| below half a
    quantization step). Its int8 files are the point's exports of model ``qat``.
    """
    model: str
    epochs: int
    learning_rate: float
    seconds_per_epoch: float
    accuracy: float
    loss: float
    quantized_layers: int
    zeros: int
    zeros_kept: bool
    int8_zeros_kept: Optional[bool] = None
    int8_extra_zeros: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class PointRecord:
    """One (method, k) point of a sweep.

    k: percent; target_sparsity, achieved_sparsity: fractions (achieved over every kernel); layer_sparsity:
    {layer: fraction}; units_kept: {layer: units with a nonzero weight}; test_accuracy (0..1), test_loss: on the
    whole test set; remaining_weights, total_weights: kernel weights; dense_size_bytes, gzip_size_bytes: the
    weights as an HDF5 file, raw and gzipped (None unless the sweep was asked for them: ``gzip_size``);
    finetune_epochs, schedule (``oneshot`` when not fine-tuned);
    distribution_strategy, replicas; point_seconds: wall time of the point; finetune_seconds_per_epoch (median),
    time_ratio_to_dense: when fine-tuned (the ratio in a comparison); histograms: per layer {"zeros", "counts"}
    of log10 |w|; shrink: ``ShrinkFigures`` of unit points with export; exports: ``VariantFigures``; qat:
    ``QATFigures`` when the sweep ran quantization-aware training.
    data_digest: content digest of the data it was computed on (``data.data_digest``); config_digest: digest of
    every setting that changes its figures, the data and the model file included (``SweepConfig`` +
    ``sweep.config_digest``). Both None in records of format 1. keras: the Keras stack the point ran on
    (``tf_keras 2.21.0``, ``Keras 3.15.1 (jax)``, ``tf_keras 2.21.0 (tf_keras twin)`` for TF-MOT on a Keras 3
    model); None in old records.
    """
    method: str
    k: float
    target_sparsity: float
    achieved_sparsity: float
    layer_sparsity: dict
    units_kept: dict
    test_accuracy: float
    test_loss: float
    remaining_weights: int
    total_weights: int
    dense_size_bytes: Optional[int]
    gzip_size_bytes: Optional[int]
    finetune_epochs: int
    schedule: str
    distribution_strategy: str
    replicas: int
    point_seconds: float = 0.0
    data_digest: Optional[str] = None
    config_digest: Optional[str] = None
    keras: Optional[str] = None
    finetune_seconds_per_epoch: Optional[float] = None
    time_ratio_to_dense: Optional[float] = None
    histograms: Optional[dict] = None
    shrink: Optional[ShrinkFigures] = None
    exports: tuple = ()
    qat: Optional[QATFigures] = None

    @property
    def key(self):
        return point_key(self.method, self.k)

    def export(self, variant, model=PRUNED):
        """The ``VariantFigures`` of ``variant`` (of the pruned or the shrunk model), or None."""
        return next((e for e in self.exports if e.variant == variant and e.model == model), None)

    def to_json(self):
        """A JSON-able dict: every field, ``shrink`` and ``exports`` nested, plus ``format_version``."""
        out = dataclasses.asdict(self)
        out["exports"] = [dataclasses.asdict(e) for e in self.exports]
        out["format_version"] = FORMAT_VERSION
        return out

    def to_row(self):
        """One flat table row: dict fields as ``<field>.<key>`` columns, exports as ``tflite_<column>_<figure>``,
        shrink figures under their format-1 names; histograms (lists) left out. Columns in sorted order."""
        row = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in ("histograms", "shrink", "exports", "qat") or value is None:
                continue
            if isinstance(value, dict):
                row.update({f"{field.name}.{k}": v for k, v in value.items()})
            else:
                row[field.name] = value
        row.update(flat_columns(self.shrink, self.exports))
        if self.qat is not None:
            row.update({f"qat_{k}": v for k, v in dataclasses.asdict(self.qat).items() if v is not None})
        return dict(sorted(row.items()))

    @classmethod
    def from_json(cls, obj, source="record"):
        """The record of a point file's JSON (format 2, or format 1 converted).

        Raises:
          RecordError: naming ``source`` and the problem: not an object, unknown format version, a missing or
            unknown field, a value of the wrong type.
        """
        if not isinstance(obj, dict):
            raise RecordError(f"{source}: a point record is a JSON object, got {type(obj).__name__}")
        obj = dict(obj)
        version = obj.pop("format_version", 1)
        if version == 1:
            obj = _from_format_1(obj, source)
        elif version != FORMAT_VERSION:
            raise RecordError(f"{source}: point record format {version!r}; this tfprune reads formats 1 and "
                              f"{FORMAT_VERSION} (re-run the point, or read it with the tfprune that wrote it)")
        values = _typed_fields(cls, obj, source, skip=("shrink", "exports", "qat"))
        if obj.get("shrink") is not None:
            values["shrink"] = ShrinkFigures(**_typed_fields(ShrinkFigures, obj["shrink"], f"{source}: shrink"))
        if obj.get("qat") is not None:
            values["qat"] = QATFigures(**_typed_fields(QATFigures, obj["qat"], f"{source}: qat"))
        exports = obj.get("exports") or []
        if not isinstance(exports, list):
            raise RecordError(f"{source}: exports must be a list, got {type(exports).__name__}")
        values["exports"] = tuple(VariantFigures(**_typed_fields(VariantFigures, e, f"{source}: exports[{i}]"))
                                  for i, e in enumerate(exports))
        return cls(**values)


def flat_columns(shrink, exports):
    """The flat table columns of a point's shrink and export figures: ``dense_params``, ``shrunk_params``...,
    ``tflite_<column>_<figure>`` per ``VariantFigures`` (``tflite_int8_sparse_accuracy``)."""
    columns = {}
    if shrink is not None:
        columns.update({_SHRINK_V1.get(k, k): v for k, v in dataclasses.asdict(shrink).items()})
    for figures in exports:
        columns.update({f"tflite_{figures.column}_{k}": v for k, v in dataclasses.asdict(figures).items()
                        if k not in ("variant", "model")})
    return columns


# ------------------------------------------------------------------------------------------- validation

_TYPES = {int: (numbers.Integral,), float: (numbers.Real,), str: (str,), dict: (dict,), tuple: (list, tuple),
          bool: (bool,)}


def _expected(annotation):
    """(python types accepted, None allowed) for a field annotation (``int``, ``Optional[float]``...)."""
    args = getattr(annotation, "__args__", None)
    if args:  # Optional[X]
        inner = next(a for a in args if a is not type(None))
        return _TYPES.get(inner, (object,)), True
    return _TYPES.get(annotation, (object,)), False


def _typed_fields(cls, obj, source, skip=()):
    """{field: value} of ``obj`` for dataclass ``cls``: every required field present, no unknown key, types
    checked (bool is not a number, only a flag)."""
    if not isinstance(obj, dict):
        raise RecordError(f"{source}: expected a JSON object, got {type(obj).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(obj) - set(fields))
    if unknown:
        raise RecordError(f"{source}: unknown field(s) {', '.join(unknown)} (written by another tfprune version?)")
    values = {}
    for name, field in fields.items():
        if name in skip:
            continue
        required = field.default is dataclasses.MISSING
        if name not in obj:
            if required:
                raise RecordError(f"{source}: field {name!r} is missing (a truncated or foreign record)")
            continue
        value = obj[name]
        types, nullable = _expected(field.type)
        if value is None and (nullable or not required):
            values[name] = value
            continue
        if (isinstance(value, bool) and bool not in types) or not isinstance(value, types):  # true is no figure
            raise RecordError(f"{source}: field {name!r} is {value!r}, expected {field.type}")
        values[name] = value
    return values


# ------------------------------------------------------------------------------------------- format 1

_SHRINK_V1 = {"kept_notes": "shrunk_kept_notes", "max_abs_diff": "shrunk_max_abs_diff"}
_FIGURES = sorted((f.name for f in dataclasses.fields(VariantFigures) if f.name not in ("variant", "model")),
                  key=len, reverse=True)  # longest first: gzip_size_bytes before size_bytes


def _from_format_1(flat, source):
    """A format-1 flat dict as a format-2 dict: ``tflite_*`` keys into ``exports``, shrink keys into ``shrink``."""
    out, exports = {}, {}
    shrink_names = {"dense_params", "shrunk_params", "dense_macs", "shrunk_macs", "shrunk_kept_notes",
                    "shrunk_max_abs_diff"}
    shrink = {}
    for key, value in flat.items():
        if key.startswith("tflite_"):
            rest = key[len("tflite_"):]
            figure = next((f for f in _FIGURES if rest.endswith("_" + f)), None)
            if figure is None:
                raise RecordError(f"{source}: unknown format-1 field {key!r}")
            column = rest[:-len(figure) - 1]
            model = SHRUNK if column.startswith(SHRUNK + "_") else PRUNED
            variant = (column[len(SHRUNK) + 1:] if model == SHRUNK else column).replace("_sparse", "+sparse")
            exports.setdefault((model, variant), {"variant": variant, "model": model})[figure] = value
        elif key in shrink_names:
            shrink[{v: k for k, v in _SHRINK_V1.items()}.get(key, key)] = value
        else:
            out[key] = value
    if shrink:
        out["shrink"] = shrink
    out["exports"] = list(exports.values())
    return out


__all__ = ["FORMAT_VERSION", "PRUNED", "QAT", "QATFigures", "flat_columns", "format_k", "model_suffix", "PointRecord",
           "RecordError", "SHRUNK", "ShrinkFigures", "VariantFigures", "point_key"]

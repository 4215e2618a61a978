"""N:M sparsity of a ``.tflite`` file, read from its weights: TF-MOT's ``tools/check_sparsity_m_by_n.py`` for tfprune.

Every FULLY_CONNECTED and CONV_2D operator's weight (input 1, followed back through DENSIFY and DEQUANTIZE to the
constant the file stores) is decoded: float32, float16 or int8 (a quantized zero is its zero point), stored dense or
in TFLite's sparse format (CSR or blocks, ``sparse_format.to_dense``, as the runtime expands it). TFLite lays a
FULLY_CONNECTED weight out as (units, in) and a CONV_2D weight as (out, kh, kw, in): a group is ``m`` consecutive
values of the last axis, the inputs of one unit (at one tap). The weight is turned into the unit kernel
(..., inputs, units) that ``tfprune.select.nm.check_nm`` reads, so the groups are exactly those of the Keras
kernel, the ones ``nm_<n>x<m>`` and TF-MOT's ``sparsity_m_by_n=(m - n, m)`` prune.
"""

import dataclasses
import os
import re

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python import schema_util
from tensorflow.lite.tools import flatbuffer_utils

from tfprune.select import nm
from tfprune.tflite.sparse_format import DTYPES, to_dense

CHECKED_OPS = {schema.BuiltinOperator.FULLY_CONNECTED: "FULLY_CONNECTED", schema.BuiltinOperator.CONV_2D: "CONV_2D"}
WEIGHT_OPS = {**CHECKED_OPS, schema.BuiltinOperator.DEPTHWISE_CONV_2D: "DEPTHWISE_CONV_2D"}
_PASS_THROUGH = (schema.BuiltinOperator.DENSIFY, schema.BuiltinOperator.DEQUANTIZE)


@dataclasses.dataclass(frozen=True)
class TensorNMCheck:
    """One weight of a .tflite file against an N:M pattern.

    name: the weight tensor's name; op: ``FULLY_CONNECTED`` or ``CONV_2D``; output: the operator's output tensor
    name (it names the Keras layer); dtype: how the file stores it (``FLOAT32``, ``INT8``...); sparse: stored in
    TFLite's sparse format; check: ``nm.NMCheck`` of its unit kernel (``.ok``, ``.violations`` of ``.groups``).
    """
    name: str
    op: str
    output: str
    dtype: str
    sparse: bool
    check: nm.NMCheck

    @property
    def ok(self):
        return self.check.ok


def _read_bytes(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        data = bytes(path_or_bytes)
    else:
        with open(os.fspath(path_or_bytes), "rb") as f:
            data = f.read()
    if not schema.Model.ModelBufferHasIdentifier(data, 0):
        raise ValueError("not a TFLite flatbuffer: the file identifier TFL3 is missing")
    return flatbuffer_utils.read_model_from_bytearray(bytearray(data))


def _values(model, tensor):
    """The stored tensor as a dense array of its shape; a quantized one minus its zero point (0 stays 0)."""
    if tensor.type not in DTYPES:
        raise ValueError(f"weight {tensor.name.decode(errors='replace')!r} has element type "
                         f"{flatbuffer_utils.type_to_name(tensor.type)}, which this check does not decode")
    data = model.buffers[tensor.buffer].data
    shape = tuple(int(d) for d in tensor.shape)
    flat = np.frombuffer(np.asarray(data if data is not None else [], np.uint8).tobytes(),
                         np.dtype(DTYPES[tensor.type]).newbyteorder("<"))
    dense = to_dense(flat, shape, tensor.sparsity) if tensor.sparsity is not None else flat.reshape(shape)
    zero_point = None if tensor.quantization is None else tensor.quantization.zeroPoint
    if zero_point is not None and len(zero_point) and np.any(np.asarray(zero_point) != 0):
        axis = int(tensor.quantization.quantizedDimension or 0)
        points = np.asarray(zero_point, np.int64)
        points = points.reshape([-1 if a == axis else 1 for a in range(dense.ndim)]) if points.size > 1 else points
        dense = dense.astype(np.int64) - points
    return dense


def _unit_kernel(weight, op):
    """TFLite's (units, in), (out, kh, kw, in) or (1, kh, kw, channels) weight as the Keras layout (in, units),
    (kh, kw, in, out) or (kh, kw, channels)."""
    if op == "FULLY_CONNECTED":
        return weight.reshape(weight.shape[0], -1).T
    if op == "DEPTHWISE_CONV_2D":
        return weight[0]
    return np.transpose(weight, (1, 2, 3, 0))


@dataclasses.dataclass(frozen=True)
class WeightKernel:
    """One stored weight of a .tflite file, decoded: ``kernel`` in Keras layout (``_unit_kernel``; a quantized
    weight as integers minus its zero point, so a zero is 0); the other fields as ``TensorNMCheck``'s."""
    name: str
    op: str
    output: str
    dtype: str
    sparse: bool
    kernel: np.ndarray


def weight_kernels(path_or_bytes):
    """Every FULLY_CONNECTED, CONV_2D and DEPTHWISE_CONV_2D weight of a .tflite file, decoded (``WeightKernel``),
    in graph order (a weight read by two operators once).

    Raises:
      OSError: the file cannot be read. ValueError: not a TFLite file, a weight this module cannot decode.
    """
    model = _read_bytes(path_or_bytes)
    results, seen = [], set()
    for s, subgraph in enumerate(model.subgraphs):
        codes = [schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
                 for op in subgraph.operators]
        producer = {int(t): i for i, op in enumerate(subgraph.operators) for t in op.outputs}
        for op, code in zip(subgraph.operators, codes):
            if code not in WEIGHT_OPS or op.inputs is None or len(op.inputs) < 2:
                continue
            index = int(op.inputs[1])
            while index in producer and codes[producer[index]] in _PASS_THROUGH:
                index = int(subgraph.operators[producer[index]].inputs[0])
            if index < 0 or index in producer or (s, index) in seen:
                continue  # a weight computed at run time is not a stored constant
            seen.add((s, index))
            tensor = subgraph.tensors[index]
            results.append(WeightKernel(
                name=tensor.name.decode(errors="replace"), op=WEIGHT_OPS[code],
                output=subgraph.tensors[int(op.outputs[0])].name.decode(errors="replace"),
                dtype=flatbuffer_utils.type_to_name(tensor.type), sparse=tensor.sparsity is not None,
                kernel=_unit_kernel(_values(model, tensor), WEIGHT_OPS[code])))
    return results


def check_nm_tflite(path_or_bytes, n=2, m=4):
    """Checks every FULLY_CONNECTED and CONV_2D weight of a .tflite file against an ``n``:``m`` pattern (at most
    ``n`` non-zeros in every ``m`` consecutive inputs of one unit: tfprune's ``nm_<n>x<m>``, TF-MOT's
    ``sparsity_m_by_n=(m - n, m)``).

    Args:
      path_or_bytes: a .tflite file's path, or its bytes.
      n, m: the pattern.

    Returns:
      list of ``TensorNMCheck``, one per weight tensor, in graph order (a weight read by two operators once).

    Raises:
      OSError: the file cannot be read. ValueError: not a TFLite file, a weight this check cannot decode, not
      ``1 <= n < m``.
    """
    return [TensorNMCheck(name=w.name, op=w.op, output=w.output, dtype=w.dtype, sparse=w.sparse,
                          check=nm.check_nm(w.kernel, n, m))
            for w in weight_kernels(path_or_bytes) if w.op in CHECKED_OPS.values()]


_SCOPE_SUFFIX = re.compile(r"_[0-9]+$")  # Keras 3's export names a layer's scope fc1_1


def layer_of(entry, layer_names, prefixes=("",)):
    """The Keras layer (of ``layer_names``) whose name, after one of ``prefixes`` (TF-MOT's QAT wrappers are
    ``quant_<layer>``), is a ``/``-separated part of ``entry``'s output or weight name (``sequential/fc1/MatMul``
    -> ``fc1``; Keras 3's ``functional/fc1_1/MatMul`` too), or None when none or several are."""
    parts = {p for name in (entry.output, entry.name) for piece in name.split(";") for p in piece.split("/")}
    parts |= {_SCOPE_SUFFIX.sub("", p) for p in parts}
    found = [layer for layer in layer_names if any(prefix + layer in parts for prefix in prefixes)]
    return found[0] if len(found) == 1 else None


def card_entry(checks, n, m, expected_layers=None):
    """The model card's ``nm`` entry: the pattern in words, whether it held in the file, and per tensor.

    expected_layers: the Keras layers that hold the pattern (``tfprune.check_nm`` of the model); the check passes
    when each of them maps to a weight of the file (``layer_of``) and all those weights hold it. None: every
    weight must hold it.
    """
    names = list(expected_layers) if expected_layers is not None else None
    by_layer = {} if names is None else {layer_of(c, names): c for c in checks}
    if names is None:
        passed = all(c.ok for c in checks)
    else:
        passed = all(layer in by_layer and by_layer[layer].ok for layer in names)
    return {"pattern": f"{n}:{m} kept ({n} of every {m} consecutive inputs of each unit)", "n": n, "m": m,
            "layers": names, "check_passed": bool(passed),
            "tensors": [{"name": c.name, "op": c.op, "dtype": c.dtype, "sparse": c.sparse, "ok": c.ok,
                         "groups": c.check.groups, "violations": c.check.violations} for c in checks]}


__all__ = ["CHECKED_OPS", "TensorNMCheck", "WEIGHT_OPS", "WeightKernel", "card_entry", "check_nm_tflite", "layer_of",
           "weight_kernels"]

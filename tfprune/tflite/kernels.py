"""Which LiteRT kernel computes each weighted operator of a ``.tflite`` file, as far as the Interpreter can tell.

The Interpreter lists every operator of the file and, after delegation, one DELEGATE node per partition XNNPACK
took, whose inputs are the tensors the partition reads (its weights among them). An operator counts as delegated
when its weight tensor (or the sparse tensor a DENSIFY expands into it) is an input of a DELEGATE node; otherwise a
builtin kernel runs it, which for a FULLY_CONNECTED weight stored in TFLite's sparse format is the sparse kernel of
that format (``fully_connected.cc``: 1x4 blocks for float, 1x16 for int8, plain CSR otherwise).
"""

import collections

import numpy as np

from tfprune.tflite import runtime

WEIGHTED_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D")
_EXPANDING_OPS = ("DENSIFY", "DEQUANTIZE")


def encoding(sparsity):
    """``dense``, ``blocks 1x4`` (units x inputs) or ``csr`` for a tensor's ``sparsity_parameters`` dict."""
    if not sparsity:
        return "dense"
    metadata = list(sparsity.get("dim_metadata", ()))
    block_map = list(np.ravel(sparsity.get("block_map", ())))
    if not block_map:
        return "csr"
    rank = len(metadata) - len(block_map)
    block = [1] * rank
    for dim, meta in zip(block_map, metadata[rank:]):
        block[int(dim)] = int(meta.get("dense_size", 1))
    return "blocks " + "x".join(str(b) for b in block)


def _kernel(delegated, weights, expanded, hybrid):
    if delegated:
        return "xnnpack"
    if expanded:
        return "builtin dense (weights expanded at load)"
    if weights != "dense":
        return f"builtin sparse ({weights})"
    return "builtin hybrid" if hybrid else "builtin dense"


def operator_kernels(interpreter):
    """One entry per weighted operator (``WEIGHTED_OPS``) of an allocated LiteRT ``interpreter``, in graph order.

    Returns:
      list of dicts: ``op`` (e.g. ``FULLY_CONNECTED``), ``name`` (its output tensor, which names the Keras layer),
      ``weights`` (how the file stores the weight: ``dense``, ``blocks 1x4``, ``csr``; ``+ DENSIFY`` when an
      operator expands it first), ``kernel`` (``xnnpack``, ``builtin sparse (blocks 1x4)``, ``builtin dense``,
      ``builtin hybrid`` for int8 weights with float input, ``builtin dense (weights expanded at load)``).
    """
    ops = interpreter._get_ops_details()  # pylint: disable=protected-access
    delegated_inputs = {int(t) for op in ops if op["op_name"] == "DELEGATE" for t in op["inputs"]}
    producer = {int(t): op for op in ops if op["op_name"] != "DELEGATE" for t in op["outputs"]}
    entries = []
    for op in ops:
        if op["op_name"] not in WEIGHTED_OPS or len(op["inputs"]) < 2:
            continue
        weight = int(op["inputs"][1])
        chain = [weight]
        while chain[-1] in producer and producer[chain[-1]]["op_name"] in _EXPANDING_OPS:
            chain.append(int(producer[chain[-1]]["inputs"][0]))
        stored = interpreter._get_tensor_details(chain[-1], 0)  # pylint: disable=protected-access
        weights = encoding(stored.get("sparsity_parameters"))
        expanded = len(chain) > 1 and weights != "dense"
        data = interpreter._get_tensor_details(int(op["inputs"][0]), 0)  # pylint: disable=protected-access
        hybrid = np.dtype(stored["dtype"]).kind == "i" and np.dtype(data["dtype"]).kind == "f"
        output = interpreter._get_tensor_details(int(op["outputs"][0]), 0)  # pylint: disable=protected-access
        entries.append({"op": op["op_name"], "name": output["name"],
                        "weights": weights + (" + DENSIFY" if expanded else ""),
                        "kernel": _kernel(any(t in delegated_inputs for t in chain), weights, expanded, hybrid)})
    return entries


def model_kernels(model_bytes, path="xnnpack"):
    """``operator_kernels`` of ``model_bytes`` loaded as ``runtime.load_interpreter`` loads it (``path``
    ``xnnpack``: the default delegate first; ``builtin``: builtin kernels only)."""
    interpreter, _ = runtime.load_interpreter(model_bytes, 1, 1, prefer_xnnpack=path == "xnnpack")
    return operator_kernels(interpreter)


def summary(entries):
    """``"builtin sparse (blocks 1x4) x4, xnnpack x1"``: how many weighted operators each kernel runs."""
    counts = collections.Counter(e["kernel"] for e in entries)
    return ", ".join(f"{kernel} x{n}" for kernel, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


__all__ = ["WEIGHTED_OPS", "encoding", "model_kernels", "operator_kernels", "summary"]

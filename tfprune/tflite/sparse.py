"""Plain CSR for the block-sparse weights of a converted ``.tflite`` file, read through a builtin DENSIFY op.

With ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` the TFLite converter (``dense_to_sparse.cc``, ``InspectWeight``)
encodes a weight in the op's block format (1x4 for float FULLY_CONNECTED, 1x16 for int8) as soon as
``block sparsity / element sparsity`` exceeds 0.9 (float) or 0.8 (quantized); only otherwise it stores plain CSR
(1x1 blocks) and inserts a builtin ``DENSIFY`` op before the consumer. At high *unstructured* sparsity the ratio
passes on chance alone (99 %: 0.99**16 / 0.99 ~= 0.86 > 0.8), so nearly every nonzero gets a block of its own:
~16 bytes per nonzero int8 weight instead of ~3 in CSR (1 value + a 2-byte column index).

The block form is also wrong in places with the pinned converter and runtime (whole blocks only, so the weights of
a ragged tail are dropped; block-sparse float16 and dynamic-range weights misread): docs/DESIGN_NOTES.md, "TFLite
block sparsity", lists what was measured.

The block form is also what makes a FULLY_CONNECTED layer fast: LiteRT's builtin kernels compute a float weight in
1x4 blocks and a full-integer int8 weight in 1x16 blocks sparsely (``fully_connected.cc``; faster than XNNPACK's
dense kernels at high block sparsity, docs/DESIGN_NOTES.md), and XNNPACK leaves those
nodes to them. ``reencode_csr(keep_blocks=True)`` therefore keeps a block tensor as it is where that kernel runs it
right: read by FULLY_CONNECTED only, float32 weights with float32 input in 1x4 blocks or int8 weights in 1x16
blocks, no weight dropped (a ragged tail that is all zero is dropped harmlessly), at least half the stored values
nonzero (the weights were pruned in blocks: blocks that are mostly zero padding, from unstructured sparsity passing
the converter's test by chance, are slower in the sparse kernel than the dense one), and the block form no larger
than the alternative. In a dynamic-range model a float block weight is not kept (XNNPACK takes it and computes NaN).

Two LiteRT failures shape the int8 cases (docs/DESIGN_NOTES.md): an int8 weight is never CSR under
``keep_blocks`` (it keeps its 1x16 blocks or is stored dense), and a dynamic-range 1x16 block weight is kept with its
type relabelled UINT8 (bytes, scales and zero points unchanged), so XNNPACK leaves the node to the builtin sparse
kernel in both APIs. This is a workaround of the runtime's behaviour, not a documented format:
``tfprune.tflite.export_variant`` checks every file's outputs against Keras in both APIs before writing it.

``reencode_csr`` rewrites every other block-encoded tensor into exactly the converter's own 1x1 form: values in
row-major order, ``traversal_order = [0, .., rank-1]``, an empty block map, leading dims DENSE, the last
SPARSE_CSR (the smallest index vector types that fit), and a builtin ``DENSIFY`` op producing a dense tensor of
the same shape, type and quantization that the consumer reads instead. Dropped weights are taken from the same
model converted without sparse encoding. Only TFLite builtin ops result. The price is at run time: DENSIFY
materializes the dense weights once (a persistent arena tensor) and the consumer runs its dense kernel.

Reading and writing use TensorFlow's flatbuffer tooling (``flatbuffer_utils`` and the ``schema_py_generated``
object API).
"""

import copy

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python import schema_util
from tensorflow.lite.tools import flatbuffer_utils

from tfprune.tflite.sparse_format import (DTYPES, UnsupportedSparsity, block_shape, csr_encoding, index_bytes,
                                          stored_region, to_dense)

# Operators a weight may pass through before the operator that computes with it.
_PASS_THROUGH = (schema.BuiltinOperator.DENSIFY, schema.BuiltinOperator.DEQUANTIZE)


def _densify_opcode(model):
    """Index of the builtin DENSIFY operator code in ``model``, added (version 1) when missing."""
    for index, code in enumerate(model.operatorCodes):
        if schema_util.get_builtin_code_from_operator_code(code) == schema.BuiltinOperator.DENSIFY:
            return index
    model.operatorCodes.append(schema.OperatorCodeT(deprecatedBuiltinCode=schema.BuiltinOperator.DENSIFY,
                                                    builtinCode=schema.BuiltinOperator.DENSIFY, version=1))
    return len(model.operatorCodes) - 1


def _is_block_encoded(tensor):
    """True for a sparse tensor stored in blocks (a non-empty block map); False for plain CSR."""
    return tensor.sparsity.blockMap is not None and len(tensor.sparsity.blockMap) > 0


def _refusal(model, subgraph, index, buffer_users):
    """Why tensor ``index`` is left as it is ("" when it can be rewritten), and its consumer operators."""
    tensor = subgraph.tensors[index]
    consumers = [op for op in subgraph.operators if op.inputs is not None and index in op.inputs]
    if not _is_block_encoded(tensor):
        return "not block-encoded (already plain CSR)", consumers
    if tensor.type not in DTYPES:
        return f"element type {flatbuffer_utils.type_to_name(tensor.type)} has no DENSIFY kernel", consumers
    if tensor.externalBuffer or buffer_users[tensor.buffer] != 1 or model.buffers[tensor.buffer].data is None:
        return "its buffer is external, shared or empty", consumers
    in_out = set(subgraph.inputs if subgraph.inputs is not None else []) | set(
        subgraph.outputs if subgraph.outputs is not None else [])
    codes = [schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]) for op in consumers]
    if not consumers or index in in_out or schema.BuiltinOperator.DENSIFY in codes:
        return "not a constant read by non-DENSIFY operators only", consumers
    return "", consumers


def _add_densify(model, subgraph, index, consumers):
    """Inserts ``DENSIFY(tensor index) -> new dense tensor`` before the first consumer, which all read it instead."""
    tensor = subgraph.tensors[index]
    model.buffers.append(schema.BufferT())
    subgraph.tensors.append(schema.TensorT(
        shape=copy.deepcopy(tensor.shape), type=tensor.type, buffer=len(model.buffers) - 1,
        name=tensor.name + b"/densified", quantization=copy.deepcopy(tensor.quantization), hasRank=tensor.hasRank,
        shapeSignature=copy.deepcopy(tensor.shapeSignature)))
    dense = len(subgraph.tensors) - 1
    first = min(subgraph.operators.index(op) for op in consumers)
    for op in consumers:
        op.inputs = [dense if i == index else int(i) for i in op.inputs]
    subgraph.operators.insert(first, schema.OperatorT(opcodeIndex=_densify_opcode(model), inputs=[index],
                                                      outputs=[dense]))


def _weight_keys(model):
    """``{(subgraph, operator position, input slot): constant tensor index}`` for the constants each operator reads,
    directly or through DENSIFY/DEQUANTIZE; positions count operators other than those two, so a model converted
    with and without ``EXPERIMENTAL_SPARSITY`` gets the same keys."""
    keys = {}
    for s, subgraph in enumerate(model.subgraphs):
        codes = [schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
                 for op in subgraph.operators]
        producer = {int(t): i for i, op in enumerate(subgraph.operators) for t in op.outputs}
        compute = [op for op, code in zip(subgraph.operators, codes) if code not in _PASS_THROUGH]
        for position, op in enumerate(compute):
            for slot, t in enumerate(int(t) for t in op.inputs):
                while t in producer and codes[producer[t]] in _PASS_THROUGH:
                    t = int(subgraph.operators[producer[t]].inputs[0])
                if t >= 0 and t not in producer:
                    keys[(s, position, slot)] = t
    return keys


def _quantization_fields(tensor):
    q = tensor.quantization
    return [None if q is None or getattr(q, f) is None else np.asarray(getattr(q, f)) for f in ("scale", "zeroPoint")]


def _reference_values(reference, key, tensor, block_values):
    """The dense values of the tensor under ``key`` in ``reference`` when it is the same weight (shape, type,
    quantization, and the values ``block_values`` in the whole blocks); else an UnsupportedSparsity."""
    model, keys = reference
    if key not in keys:
        raise UnsupportedSparsity("no constant in the reference model is read at the same place")
    subgraph = model.subgraphs[key[0]]
    twin = subgraph.tensors[keys[key]]
    data = model.buffers[twin.buffer].data
    same_quantization = all(np.array_equal(a, b) if a is not None and b is not None else a is b
                            for a, b in zip(_quantization_fields(twin), _quantization_fields(tensor)))
    if (twin.sparsity is not None or twin.type != tensor.type or list(twin.shape) != list(tensor.shape)
            or data is None or not same_quantization):
        raise UnsupportedSparsity("the reference model's tensor differs in shape, type, quantization or encoding")
    dense = np.frombuffer(np.asarray(data, np.uint8).tobytes(), block_values.dtype)
    if dense.size != block_values.size:
        raise UnsupportedSparsity("the reference model's tensor has the wrong number of values")
    dense = dense.reshape(block_values.shape)
    region = stored_region(dense.shape, block_shape(dense.shape, tensor.sparsity))
    if not np.array_equal(dense[region], block_values[region]):
        raise UnsupportedSparsity("the reference model's values differ in the stored blocks")
    return dense


# (weight type, FULLY_CONNECTED input type) -> the block LiteRT's builtin sparse kernel computes.
_BLOCK_KERNELS = {(schema.TensorType.FLOAT32, schema.TensorType.FLOAT32): (1, 4),
                  (schema.TensorType.INT8, schema.TensorType.INT8): (1, 16),
                  (schema.TensorType.INT8, schema.TensorType.FLOAT32): (1, 16)}  # hybrid: relabelled UINT8


MIN_BLOCK_FILL = 0.5  # fraction of a kept block tensor's stored values that are nonzero


def _is_hybrid(subgraph, op):
    """A dynamic-range operator: integer weights (int8, or uint8 once relabelled here), float input."""
    return subgraph.tensors[int(op.inputs[1])].type in (schema.TensorType.INT8, schema.TensorType.UINT8) and \
        subgraph.tensors[int(op.inputs[0])].type == schema.TensorType.FLOAT32


def _block_kernel_refusal(model, subgraph, index, consumers, block):
    """Why LiteRT's sparse block kernel would not compute tensor ``index`` right ("" when it would)."""
    codes = {schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]) for op in consumers}
    if codes != {schema.BuiltinOperator.FULLY_CONNECTED} or any(int(op.inputs[1]) != index for op in consumers):
        return "not the weight of FULLY_CONNECTED operators only"
    tensor = subgraph.tensors[index]
    inputs = {subgraph.tensors[int(op.inputs[0])].type for op in consumers}
    kernels = {_BLOCK_KERNELS.get((tensor.type, t)) for t in inputs}
    if kernels != {block}:
        return (f"no sparse kernel computes {flatbuffer_utils.type_to_name(tensor.type)} weights in {block} blocks "
                f"with {', '.join(sorted(flatbuffer_utils.type_to_name(t) for t in inputs))} input")
    fc = schema.BuiltinOperator.FULLY_CONNECTED
    if tensor.type == schema.TensorType.FLOAT32 and any(
            _is_hybrid(subgraph, op) for op in subgraph.operators
            if schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]) == fc):
        return "a float block weight in a dynamic-range model (XNNPACK computes NaN)"
    values = model.buffers[tensor.buffer].data
    fill = np.count_nonzero(np.asarray(values, np.uint8).reshape(-1, np.dtype(DTYPES[tensor.type]).itemsize).any(1))
    if fill < MIN_BLOCK_FILL * max(1, len(values) // np.dtype(DTYPES[tensor.type]).itemsize):
        return f"{fill} of its stored values are nonzero (unstructured sparsity in blocks of zero padding)"
    return ""


def _reencode_tensor(model, subgraph, index, buffer_users, reference, key, keep_blocks=False):
    """Re-encodes one sparse tensor unless ``_refusal`` or the decoding says no, or it is kept for the block kernel
    (``keep_blocks``); returns its report entry."""
    tensor = subgraph.tensors[index]
    buffer = model.buffers[tensor.buffer]
    before = (0 if buffer.data is None else len(buffer.data)) + index_bytes(tensor.sparsity)
    entry = {"name": tensor.name.decode(errors="replace"), "shape": tuple(int(d) for d in tensor.shape),
             "dtype": flatbuffer_utils.type_to_name(tensor.type), "block": None, "nonzeros": None,
             "bytes_before": before, "bytes_after": before, "truncated": False,
             "restored_nonzeros": 0, "rewritten": False, "kept": False}
    reason, consumers = _refusal(model, subgraph, index, buffer_users)
    if reason and keep_blocks and tensor.type == schema.TensorType.INT8 and not _is_block_encoded(tensor):
        return _densify_int8_csr(model, subgraph, index, consumers, entry)
    if reason:
        return dict(entry, reason=reason)
    dtype = np.dtype(DTYPES[tensor.type]).newbyteorder("<")
    try:
        entry["block"] = block_shape(entry["shape"], tensor.sparsity)
        dense = to_dense(np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), dtype), entry["shape"],
                         tensor.sparsity)
        entry["truncated"] = any(size % b for size, b in zip(entry["shape"], entry["block"]))
        if entry["truncated"]:
            if reference is None:
                raise UnsupportedSparsity(f"blocks {entry['block']} do not divide the shape: the converter did not "
                                          "store the rest; a reference model is needed to restore it")
            stored = np.count_nonzero(dense)
            dense = _reference_values(reference, key, tensor, dense)
            entry["restored_nonzeros"] = int(np.count_nonzero(dense) - stored)
        values, sparsity = csr_encoding(dense)
    except UnsupportedSparsity as e:
        return dict(entry, reason=f"left as it is: {e}")
    csr_bytes = values.nbytes + index_bytes(sparsity)
    if keep_blocks:
        int8 = tensor.type == schema.TensorType.INT8
        other, other_bytes = ("dense", dense.nbytes) if int8 else ("CSR", csr_bytes)
        why = (_block_kernel_refusal(model, subgraph, index, consumers, entry["block"]) or
               (f"{entry['restored_nonzeros']} weights past the last whole block" if entry["restored_nonzeros"]
                else "") or (f"its blocks take {before} bytes, {other} {other_bytes}" if before > other_bytes else ""))
        if not why:
            hybrid = _is_hybrid(subgraph, consumers[0])
            if hybrid:
                tensor.type = schema.TensorType.UINT8
            return dict(entry, nonzeros=len(values), kept=True, rewritten=hybrid, relabelled_uint8=hybrid,
                        reason="kept for LiteRT's sparse block kernel")
        entry["keep_refusal"] = why
        if int8:  # CSR + DENSIFY of an int8 weight does not load in CompiledModel: store it dense
            buffer.data = np.frombuffer(dense.astype(dtype).tobytes(), np.uint8)
            tensor.sparsity = None
            return dict(entry, nonzeros=len(values), bytes_after=dense.nbytes, rewritten=True, stored_dense=True,
                        reason="")
    entry.update(nonzeros=len(values), bytes_after=csr_bytes)
    buffer.data = np.frombuffer(values.astype(dtype).tobytes(), np.uint8)
    tensor.sparsity = sparsity
    _add_densify(model, subgraph, index, consumers)
    return dict(entry, rewritten=True, reason="")


def _densify_int8_csr(model, subgraph, index, consumers, entry):
    """Stores the converter's CSR int8 weight ``index`` dense in the tensor its DENSIFY op wrote, and drops the op
    (XNNPACK fails on int8 DENSIFY: module docstring)."""
    tensor, buffer = subgraph.tensors[index], model.buffers[subgraph.tensors[index].buffer]
    codes = [schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex]) for op in consumers]
    if not consumers or any(code != schema.BuiltinOperator.DENSIFY for code in codes) or buffer.data is None:
        return dict(entry, reason="an int8 CSR weight not read by DENSIFY alone")
    try:
        dense = to_dense(np.frombuffer(np.asarray(buffer.data, np.uint8).tobytes(), np.int8), entry["shape"],
                         tensor.sparsity)
    except UnsupportedSparsity as e:
        return dict(entry, reason=f"left as it is: {e}")
    for op in consumers:
        model.buffers[subgraph.tensors[int(op.outputs[0])].buffer].data = np.frombuffer(dense.tobytes(), np.uint8)
        subgraph.operators.remove(op)
    buffer.data, tensor.sparsity = None, None  # the tensor is read no more: nothing of it stays in the file
    return dict(entry, nonzeros=int(np.count_nonzero(dense)), bytes_after=dense.nbytes, rewritten=True,
                stored_dense=True, reason="")


def _opcode(model, code, version):
    """Index of the operator code ``(code, version)`` in ``model``, added when missing."""
    for index, entry in enumerate(model.operatorCodes):
        if schema_util.get_builtin_code_from_operator_code(entry) == code and entry.version == version:
            return index
    model.operatorCodes.append(schema.OperatorCodeT(deprecatedBuiltinCode=min(code, 127), builtinCode=code,
                                                    version=version))
    return len(model.operatorCodes) - 1


def _compute_ops(model, subgraph):
    codes = [schema_util.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
             for op in subgraph.operators]
    return [(op, code) for op, code in zip(subgraph.operators, codes) if code not in _PASS_THROUGH]


def _plain_versions(model, reference_model):
    """Gives every operator that no longer reads a sparse weight directly the version the same operator has in the
    conversion without sparsity: the converter marks a sparse FULLY_CONNECTED with a version (8) that XNNPACK does
    not take, which would keep a weight stored dense (or expanded by DENSIFY), or a dense layer sharing the sparse
    one's operator code, off XNNPACK. Returns True when an operator changed."""
    changed = False
    for subgraph, twin in zip(model.subgraphs, reference_model.subgraphs):
        ours, theirs = _compute_ops(model, subgraph), _compute_ops(reference_model, twin)
        if len(ours) != len(theirs):
            continue
        for (op, code), (their_op, their_code) in zip(ours, theirs):
            sparse_input = any(int(t) >= 0 and subgraph.tensors[int(t)].sparsity is not None for t in op.inputs)
            version = reference_model.operatorCodes[their_op.opcodeIndex].version
            if code == their_code and not sparse_input and model.operatorCodes[op.opcodeIndex].version != version:
                op.opcodeIndex, changed = _opcode(model, code, version), True
    return changed


def reencode_csr(model_bytes, reference_bytes=None, keep_blocks=False):
    """Rewrites the block-encoded sparse constants of a ``.tflite`` file as plain CSR read through DENSIFY.

    Every constant with sparsity parameters and a non-empty block map is decoded (``to_dense``), re-encoded as
    plain CSR (``csr_encoding``) and read by its consumers through a new builtin ``DENSIFY`` op. That is done even
    when CSR is not smaller (a tensor with a handful of nonzeros may grow by tens of bytes, plus ~170 bytes and,
    when quantized, 12 bytes per channel for the added op and dense tensor), because LiteRT misreads block weights
    in places (module docstring). Tensors without a block map (the converter's own CSR + DENSIFY), of a type
    DENSIFY does not take (float32, float16, int8 only), with shared or external buffers, read by DENSIFY already
    or of a layout ``to_dense`` refuses are left as they are, and so is a tensor whose blocks do not divide its
    shape unless ``reference_bytes`` is given: the same model converted without ``EXPERIMENTAL_SPARSITY``, whose
    weight read at the same place (same shape, type, quantization and the same values in the stored blocks)
    supplies the weights the converter dropped.

    Args:
      model_bytes: ``.tflite`` file contents (bytes), e.g. from ``TFLiteConverter.convert()``.
      reference_bytes: optional ``.tflite`` contents of the same conversion without sparse encoding.
      keep_blocks: keep the block tensors LiteRT's sparse block kernels compute right, when not larger than the
        alternative, and store int8 weights dense rather than CSR (module docstring): a file that runs right in
        both LiteRT APIs. With ``reference_bytes``, an operator that no longer reads a sparse weight gets the
        reference's operator version (XNNPACK refuses the converter's sparse version). False rewrites every block
        tensor as CSR.

    Returns:
      ``(new_bytes, report)``: the file (``model_bytes`` itself when nothing was rewritten) and one dict per
      sparse tensor: ``name``, ``shape``, ``dtype``, ``block`` (e.g. ``(1, 16)``, None when not decoded),
      ``nonzeros`` (None when not decoded), ``bytes_before`` and ``bytes_after`` (stored values plus index vectors,
      in bytes), ``truncated`` (blocks do not divide the shape), ``restored_nonzeros`` (dropped nonzero weights
      taken from the reference), ``rewritten``, ``kept`` (left in block form for the sparse kernel), ``reason``
      (why not rewritten, else "") and, under ``keep_blocks``, ``keep_refusal`` (why a block tensor was not kept),
      ``relabelled_uint8`` and ``stored_dense`` where they apply.

    Raises:
      ValueError: ``model_bytes`` or ``reference_bytes`` is not a TFLite flatbuffer (no ``TFL3`` identifier).
    """
    model = _read(model_bytes)
    reference = None
    if reference_bytes is not None:
        reference_model = _read(reference_bytes)
        reference = (reference_model, _weight_keys(reference_model))
    keys = {(key[0], index): key for key, index in _weight_keys(model).items()}
    buffer_users = np.bincount([t.buffer for sg in model.subgraphs for t in sg.tensors], minlength=len(model.buffers))
    report = [_reencode_tensor(model, subgraph, index, buffer_users, reference, keys.get((s, index)), keep_blocks)
              for s, subgraph in enumerate(model.subgraphs) for index in range(len(subgraph.tensors))
              if subgraph.tensors[index].sparsity is not None]
    versions = keep_blocks and reference is not None and _plain_versions(model, reference[0])
    if not versions and not any(entry["rewritten"] for entry in report):
        return model_bytes, report
    return flatbuffer_utils.convert_object_to_bytearray(model), report


def _read(model_bytes):
    if not schema.Model.ModelBufferHasIdentifier(model_bytes, 0):
        raise ValueError("not a TFLite flatbuffer: the file identifier TFL3 is missing")
    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))

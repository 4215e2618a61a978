"""Plain CSR for the block-sparse weights of a converted ``.tflite`` file, read through a builtin DENSIFY op.

With ``tf.lite.Optimize.EXPERIMENTAL_SPARSITY`` the TFLite converter (``dense_to_sparse.cc``, ``InspectWeight``)
encodes a weight in the op's block format (1x4 for float FULLY_CONNECTED, 1x16 for int8) as soon as
``block sparsity / element sparsity`` exceeds 0.9 (float) or 0.8 (quantized); only otherwise it stores plain CSR
(1x1 blocks) and inserts a builtin ``DENSIFY`` op before the consumer. At high *unstructured* sparsity the ratio
passes on chance alone (99 %: 0.99**16 / 0.99 ~= 0.86 > 0.8), so nearly every nonzero gets a block of its own:
~16 bytes per nonzero int8 weight instead of ~3 in CSR (1 value + a 2-byte column index).

The block form is also wrong in places (TF 2.21 converter, LiteRT 2.3.0, measured on LeNet-300-100 at 99 %):

* the converter stores whole blocks only: a 1x16 block on a 300-wide input drops the weights of the last 12
  columns (``FormatConverter`` takes ``floor(300 / 16)`` blocks), and the runtime computes without them;
* the builtin DEQUANTIZE kernel reads a block-sparse float16 weight as if it were dense: NaN outputs;
* XNNPACK takes the FULLY_CONNECTED nodes of a dynamic-range model whose weights are block-sparse and misreads
  them: wrong outputs (NaN for a float weight).

``reencode_csr`` therefore rewrites every block-encoded tensor into exactly the converter's own 1x1 form: values in
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

DENSE, CSR = schema.DimensionType.DENSE, schema.DimensionType.SPARSE_CSR
# Element types the builtin DENSIFY kernel handles.
DTYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
          schema.TensorType.INT8: np.int8}
# (union type, dtype, object class), smallest first: the converter's choice for index vectors.
_INDEX_VECTORS = ((schema.SparseIndexVector.Uint8Vector, np.uint8, schema.Uint8VectorT),
                  (schema.SparseIndexVector.Uint16Vector, np.uint16, schema.Uint16VectorT),
                  (schema.SparseIndexVector.Int32Vector, np.int32, schema.Int32VectorT))
_INDEX_DTYPES = {kind: dtype for kind, dtype, _ in _INDEX_VECTORS}
# Operators a weight may pass through before the operator that computes with it.
_PASS_THROUGH = (schema.BuiltinOperator.DENSIFY, schema.BuiltinOperator.DEQUANTIZE)


class UnsupportedSparsity(ValueError):
    """A sparse tensor layout that ``to_dense`` does not decode (the tensor is then left as it is)."""


def _index_array(kind, vector):
    if kind not in _INDEX_DTYPES or vector is None or vector.values is None:
        raise UnsupportedSparsity(f"index vector of union type {kind} is missing or unknown")
    return np.asarray(vector.values, np.int64)


def _index_bytes(sparsity):
    return sum(np.dtype(_INDEX_DTYPES[kind]).itemsize * len(vector.values)
               for meta in sparsity.dimMetadata
               for kind, vector in ((meta.arraySegmentsType, meta.arraySegments),
                                    (meta.arrayIndicesType, meta.arrayIndices)) if kind in _INDEX_DTYPES)


def _expanded_sizes(shape, sparsity):
    """(traversal order, block map, sizes of d0..dn-1 counted in blocks then of the block dims), as the runtime's
    ``FormatConverter`` takes them: a block that does not divide its dimension covers ``floor(size / block)``
    blocks, the rest of the dimension is not stored."""
    order, rank = [int(d) for d in sparsity.traversalOrder], len(shape)
    block_map = [int(d) for d in (sparsity.blockMap if sparsity.blockMap is not None else [])]
    metadata = sparsity.dimMetadata or []
    if (sorted(order[:rank]) != list(range(rank)) or sorted(order[rank:]) != list(range(rank, len(order)))
            or len(block_map) != len(order) - rank or len(metadata) != len(order)
            or len(set(block_map)) != len(block_map) or any(not 0 <= d < rank for d in block_map)):
        raise UnsupportedSparsity(f"traversal order {order} with block map {block_map} and {len(metadata)} dim "
                                  f"metadata for a rank-{rank} tensor")
    sizes = [int(d) for d in shape] + [0] * len(block_map)
    for level, dim in enumerate(order):
        if dim >= rank:
            if metadata[level].format != DENSE or metadata[level].denseSize < 1:
                raise UnsupportedSparsity("a block dimension that is not DENSE with a positive size")
            sizes[block_map[dim - rank]] //= metadata[level].denseSize
            sizes[dim] = metadata[level].denseSize
    return order, block_map, sizes


def block_shape(shape, sparsity):
    """The block of a sparse tensor per dimension, e.g. ``(1, 16)``; all ones without a block map.

    Raises:
      UnsupportedSparsity: inconsistent traversal order, block map or dim metadata.
    """
    order, block_map, sizes = _expanded_sizes(shape, sparsity)
    block = [1] * len(shape)
    for k, dim in enumerate(block_map):
        block[dim] = sizes[len(shape) + k]
    return tuple(block)


def _stored_region(shape, block):
    """The slices of a tensor that a block encoding can hold: whole blocks only."""
    return tuple(slice(0, size // b * b) for size, b in zip(shape, block))


def _sparse_level(positions, coords, level, meta, size):
    """Descends one SPARSE_CSR level: every stored child of each parent position, in storage order."""
    segments = _index_array(meta.arraySegmentsType, meta.arraySegments)
    indices = _index_array(meta.arrayIndicesType, meta.arrayIndices)
    if len(positions) and positions.max() + 1 >= len(segments):
        raise UnsupportedSparsity("array_segments is shorter than its parent level")
    starts, counts = segments[positions], segments[positions + 1] - segments[positions]
    if (counts < 0).any() or (len(counts) and starts.min() < 0):
        raise UnsupportedSparsity("array_segments is not non-decreasing")
    owner = np.repeat(np.arange(len(positions)), counts)
    children = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + starts[owner]
    if len(children) and (children.max() >= len(indices) or indices[children].max() >= size
                          or indices[children].min() < 0):
        raise UnsupportedSparsity("array_indices is too short or indexes past the dimension")
    coords = coords[:, owner]
    coords[level] = indices[children]
    return children, coords


def to_dense(values, shape, sparsity):
    """Decodes TFLite's sparse tensor format (any rank, with or without blocks) to the dense array, as the runtime
    does: where a block does not divide its dimension, the positions past the last whole block are zero.

    Args:
      values: 1-D array of the stored values, in traversal order (the tensor's buffer, typed).
      shape: the dense shape (the tensor's ``shape``).
      sparsity: ``SparsityParametersT`` (traversal_order, block_map, dim_metadata with DENSE or SPARSE_CSR levels
        and Int32/Uint16/Uint8 index vectors).

    Returns:
      ndarray of ``shape`` and ``values.dtype``, zeros where nothing is stored.

    Raises:
      UnsupportedSparsity (a ValueError): a layout this decoder does not handle or that is inconsistent (index out
        of range, value count not matching the stored positions).
    """
    order, block_map, sizes = _expanded_sizes(shape, sparsity)
    rank = len(shape)
    positions, coords = np.zeros(1, np.int64), np.zeros((len(order), 1), np.int64)
    for level, dim in enumerate(order):
        meta, size = sparsity.dimMetadata[level], sizes[dim]
        if meta.format == DENSE:
            if meta.denseSize != size:
                raise UnsupportedSparsity(f"DENSE level {level} of size {meta.denseSize}, expected {size}")
            parents = len(positions)
            positions = (positions[:, None] * size + np.arange(size)).ravel()
            coords = np.repeat(coords, size, axis=1)
            coords[level] = np.tile(np.arange(size), parents)
        elif meta.format == CSR:
            positions, coords = _sparse_level(positions, coords, level, meta, size)
        else:
            raise UnsupportedSparsity(f"dimension format {meta.format}")
    if len(positions) != len(values):
        raise UnsupportedSparsity(f"{len(values)} values stored for {len(positions)} positions")
    original = np.zeros((rank, len(positions)), np.int64)
    for level, dim in enumerate(order):
        if dim < rank:
            original[dim] = coords[level]
        else:
            block = sizes[dim]
            original[block_map[dim - rank]] = original[block_map[dim - rank]] * block + coords[level]
    dense = np.zeros(shape, values.dtype)
    dense[tuple(original)] = values
    return dense


def _index_vector(array):
    """The smallest (union type, vector object) holding the non-negative ints ``array``."""
    top = int(array.max()) if len(array) else 0
    for kind, dtype, vector_class in _INDEX_VECTORS:
        if top <= np.iinfo(dtype).max:
            return kind, vector_class(values=array.astype(dtype))
    raise UnsupportedSparsity(f"index {top} does not fit an int32 index vector")


def csr_encoding(dense):
    """Plain CSR of ``dense`` (rank >= 1) as the converter writes it for unstructured sparsity.

    Returns:
      ``(values, sparsity)``: the nonzero values (1-D, row-major, ``dense.dtype``) and ``SparsityParametersT``
      with ``traversal_order [0..rank-1]``, an empty block map, dims 0..rank-2 DENSE and the last SPARSE_CSR.
    """
    rows = dense.reshape(-1, dense.shape[-1])
    row, column = np.nonzero(rows)
    segments = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=len(rows)))])
    segments_type, segments_vector = _index_vector(segments)
    indices_type, indices_vector = _index_vector(column)
    metadata = [schema.DimensionMetadataT(format=DENSE, denseSize=int(size)) for size in dense.shape[:-1]]
    metadata.append(schema.DimensionMetadataT(format=CSR, arraySegmentsType=segments_type,
                                              arraySegments=segments_vector, arrayIndicesType=indices_type,
                                              arrayIndices=indices_vector))
    sparsity = schema.SparsityParametersT(traversalOrder=list(range(dense.ndim)), blockMap=[], dimMetadata=metadata)
    return rows[row, column], sparsity


def _densify_opcode(model):
    """Index of the builtin DENSIFY operator code in ``model``, added (version 1) when missing."""
    for index, code in enumerate(model.operatorCodes):
        if schema_util.get_builtin_code_from_operator_code(code) == schema.BuiltinOperator.DENSIFY:
            return index
    model.operatorCodes.append(schema.OperatorCodeT(deprecatedBuiltinCode=schema.BuiltinOperator.DENSIFY,
                                                    builtinCode=schema.BuiltinOperator.DENSIFY, version=1))
    return len(model.operatorCodes) - 1


def _refusal(model, subgraph, index, buffer_users):
    """Why tensor ``index`` is left as it is ("" when it can be rewritten), and its consumer operators."""
    tensor = subgraph.tensors[index]
    consumers = [op for op in subgraph.operators if op.inputs is not None and index in op.inputs]
    if tensor.sparsity.blockMap is None or len(tensor.sparsity.blockMap) == 0:
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
    region = _stored_region(dense.shape, block_shape(dense.shape, tensor.sparsity))
    if not np.array_equal(dense[region], block_values[region]):
        raise UnsupportedSparsity("the reference model's values differ in the stored blocks")
    return dense


def _reencode_tensor(model, subgraph, index, buffer_users, reference, key):
    """Re-encodes one sparse tensor unless ``_refusal`` or the decoding says no; returns its report entry."""
    tensor = subgraph.tensors[index]
    buffer = model.buffers[tensor.buffer]
    before = (0 if buffer.data is None else len(buffer.data)) + _index_bytes(tensor.sparsity)
    entry = {"name": tensor.name.decode(errors="replace"), "shape": tuple(int(d) for d in tensor.shape),
             "dtype": flatbuffer_utils.type_to_name(tensor.type), "block": None, "nonzeros": None,
             "bytes_before": before, "bytes_after": before, "truncated": False,
             "restored_nonzeros": 0, "rewritten": False}
    reason, consumers = _refusal(model, subgraph, index, buffer_users)
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
    entry.update(nonzeros=len(values), bytes_after=values.nbytes + _index_bytes(sparsity))
    buffer.data = np.frombuffer(values.astype(dtype).tobytes(), np.uint8)
    tensor.sparsity = sparsity
    _add_densify(model, subgraph, index, consumers)
    return dict(entry, rewritten=True, reason="")


def reencode_csr(model_bytes, reference_bytes=None):
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

    Returns:
      ``(new_bytes, report)``: the file (``model_bytes`` itself when nothing was rewritten) and one dict per
      sparse tensor: ``name``, ``shape``, ``dtype``, ``block`` (e.g. ``(1, 16)``, None when not decoded),
      ``nonzeros`` (None when not decoded), ``bytes_before`` and ``bytes_after`` (stored values plus index vectors,
      in bytes), ``truncated`` (blocks do not divide the shape), ``restored_nonzeros`` (dropped nonzero weights
      taken from the reference), ``rewritten`` and ``reason`` (why not, else "").

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
    report = [_reencode_tensor(model, subgraph, index, buffer_users, reference, keys.get((s, index)))
              for s, subgraph in enumerate(model.subgraphs) for index in range(len(subgraph.tensors))
              if subgraph.tensors[index].sparsity is not None]
    if not any(entry["rewritten"] for entry in report):
        return model_bytes, report
    return flatbuffer_utils.convert_object_to_bytearray(model), report


def _read(model_bytes):
    if not schema.Model.ModelBufferHasIdentifier(model_bytes, 0):
        raise ValueError("not a TFLite flatbuffer: the file identifier TFL3 is missing")
    return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))

"""TFLite's sparse tensor format (``SparsityParametersT``): decoding any layout to dense, encoding plain CSR.

The format (``schema.fbs``): a tensor's values are stored in ``traversal_order``, whose first ``rank`` levels are
the tensor's dimensions (counted in blocks when a dimension is blocked) and whose further levels are the block
dimensions named by ``block_map``; each level is DENSE (a size) or SPARSE_CSR (segments and indices). The runtime's
``FormatConverter`` keeps whole blocks only: a block that does not divide its dimension covers
``floor(size / block)`` blocks and the rest of the dimension is not stored.
"""

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

DENSE, CSR = schema.DimensionType.DENSE, schema.DimensionType.SPARSE_CSR
# Element types the builtin DENSIFY kernel handles.
DTYPES = {schema.TensorType.FLOAT32: np.float32, schema.TensorType.FLOAT16: np.float16,
          schema.TensorType.INT8: np.int8}
# (union type, dtype, object class), smallest first: the converter's choice for index vectors.
_INDEX_VECTORS = ((schema.SparseIndexVector.Uint8Vector, np.uint8, schema.Uint8VectorT),
                  (schema.SparseIndexVector.Uint16Vector, np.uint16, schema.Uint16VectorT),
                  (schema.SparseIndexVector.Int32Vector, np.int32, schema.Int32VectorT))
_INDEX_DTYPES = {kind: dtype for kind, dtype, _ in _INDEX_VECTORS}


class UnsupportedSparsity(ValueError):
    """A sparse tensor layout that ``to_dense`` does not decode (the tensor is then left as it is)."""


def _index_array(kind, vector):
    if kind not in _INDEX_DTYPES or vector is None or vector.values is None:
        raise UnsupportedSparsity(f"index vector of union type {kind} is missing or unknown")
    return np.asarray(vector.values, np.int64)


def index_bytes(sparsity):
    """Bytes of the index vectors (segments and indices) of ``sparsity``."""
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


def stored_region(shape, block):
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


__all__ = ["CSR", "DENSE", "DTYPES", "UnsupportedSparsity", "block_shape", "csr_encoding", "index_bytes",
           "stored_region", "to_dense"]

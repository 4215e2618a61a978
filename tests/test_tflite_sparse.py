"""tfprune.tflite_sparse: the converter's block format decoded, re-encoded as CSR + DENSIFY, and run in LiteRT.

End to end on LeNet-300-100 trained one epoch on 2,000 real Fashion-MNIST images and pruned in numpy, with tiny
hand-written layouts for the decoder.
"""

import functools
from unittest import mock

import numpy as np
import pytest
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from tfprune import tflite as export
from tfprune.tflite import runtime as tflite_runtime
from tfprune.tflite import sparse as tflite_sparse
from tfprune._env import keras

DENSIFY = "DENSIFY"


def magnitude_pruned(model, fraction):
    """A plain copy of ``model`` with the smallest ``fraction`` of each Dense kernel zeroed."""
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for layer in pruned.layers:
        if isinstance(layer, keras.layers.Dense):
            kernel = layer.kernel.numpy()
            kernel.flat[np.argsort(np.abs(kernel), axis=None)[:int(fraction * kernel.size)]] = 0.0
            layer.kernel.assign(kernel)
    return pruned


@pytest.fixture(scope="module")
def conversions(trained_lenet):
    """quantization -> (plain file, the converter's sparse file, ``to_tflite(sparse_encoding=True)``) at 99 %."""
    model, _, _, representative = trained_lenet
    model = magnitude_pruned(model, 0.99)

    @functools.lru_cache(maxsize=None)
    def convert(quantization):
        seen = []
        real = tflite_sparse.reencode_csr
        with mock.patch.object(tflite_sparse, "reencode_csr", lambda *a, **k: seen.append(a[0]) or real(*a, **k)):
            csr = export.to_tflite(model, quantization, True, representative)
        return export.to_tflite(model, quantization, False, representative), seen[0], csr
    return convert


def weights(model_bytes):
    """The dense weight of each FULLY_CONNECTED op, in op order, followed back through DENSIFY/DEQUANTIZE."""
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    subgraph = model.subgraphs[0]
    producer = {int(t): op for op in subgraph.operators for t in op.outputs}
    out = []
    for op in subgraph.operators:
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "FULLY_CONNECTED":
            index = int(op.inputs[1])
            while index in producer:
                index = int(producer[index].inputs[0])
            tensor = subgraph.tensors[index]
            values = np.frombuffer(np.asarray(model.buffers[tensor.buffer].data, np.uint8).tobytes(),
                                   tflite_sparse.DTYPES[tensor.type])
            shape = tuple(int(d) for d in tensor.shape)
            out.append((tensor, values.reshape(shape) if tensor.sparsity is None else
                        tflite_sparse.to_dense(values, shape, tensor.sparsity)))
    return out


def op_names(model_bytes):
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    return [flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in model.subgraphs[0].operators]


def outputs(model_bytes, x, prefer_xnnpack):
    interpreter, info = export.load_interpreter(model_bytes, len(x), prefer_xnnpack=prefer_xnnpack)
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], tflite_runtime.quantize(x, inp))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"]), info


@pytest.mark.parametrize("quantization", export.QUANTIZATIONS)
def test_block_format_decodes_to_the_plain_files_weights(conversions, quantization):
    dense, block, csr = conversions(quantization)
    plain, blocked, reencoded = weights(dense), weights(block), weights(csr)
    assert [t.sparsity is not None and len(t.sparsity.blockMap) > 0 for t, _ in blocked] == [True] * 3
    for (_, expected), (tensor, decoded), (csr_tensor, restored) in zip(plain, blocked, reencoded):
        block = tflite_sparse.block_shape(decoded.shape, tensor.sparsity)
        stored = tuple(slice(0, size // b * b) for size, b in zip(decoded.shape, block))
        assert np.array_equal(decoded[stored], expected[stored])  # the same quantized values, bit for bit
        assert np.count_nonzero(decoded) == np.count_nonzero(decoded[stored])
        assert np.array_equal(restored, expected)  # including the columns past the last whole block
        if tensor.type == schema.TensorType.INT8:  # an int8 weight behind DENSIFY does not load in CompiledModel
            assert csr_tensor.sparsity is None
        else:  # float32, float16, and the small float logits kernel that dynamic range leaves unquantized
            assert list(csr_tensor.sparsity.traversalOrder) == [0, 1] and len(csr_tensor.sparsity.blockMap) == 0
    assert op_names(csr).count(DENSIFY) == {"dynamic": 1, "int8": 0}.get(quantization, 3)


def test_blocks_not_dividing_the_input_drop_weights_that_the_reference_restores(conversions):
    dense, block, _ = conversions("int8")
    _, alone = tflite_sparse.reencode_csr(block)
    _, with_reference = tflite_sparse.reencode_csr(block, dense)
    # fc2 reads 300 inputs: 18 whole 1x16 blocks, the last 12 columns are not stored.
    fc2 = [e for e in alone if e["shape"] == (100, 300)][0]
    assert fc2["block"] == (1, 16) and fc2["truncated"] and not fc2["rewritten"] and "reference" in fc2["reason"]
    restored = [e for e in with_reference if e["shape"] == (100, 300)][0]
    assert restored["rewritten"] and restored["restored_nonzeros"] > 0
    assert restored["nonzeros"] == np.count_nonzero(weights(dense)[1][1])


@pytest.mark.parametrize("quantization", export.QUANTIZATIONS)
def test_reencoded_file_is_smaller_and_computes_the_plain_model(conversions, trained_lenet, quantization):
    _, x, _, _ = trained_lenet
    dense, block, csr = conversions(quantization)
    if quantization in ("dynamic", "int8"):  # int8 weights stored dense: the plain file's size, XNNPACK's speed
        assert len(csr) < 1.05 * len(dense), (len(csr), len(dense))
    else:
        assert len(csr) < 0.7 * len(block), (len(csr), len(block))
        assert len(csr) < len(dense) / 8
    expected, _ = outputs(dense, x, prefer_xnnpack=False)
    got, info = outputs(csr, x, prefer_xnnpack=False)
    assert info["path"] == "builtin" and np.array_equal(got, expected)  # the same dense kernels on the same weights
    got, info = outputs(csr, x, prefer_xnnpack=True)
    expected, _ = outputs(dense, x, prefer_xnnpack=True)
    assert np.allclose(got, expected, rtol=0, atol=1e-6)  # XNNPACK may take other nodes than in the plain file
    assert info["path"] == "xnnpack" and not info["fallback_reason"]


def test_converter_block_form_is_misread_where_the_module_says(conversions, trained_lenet):
    _, x, _, _ = trained_lenet
    # The reasons every block tensor is rewritten, not only those CSR stores smaller (LiteRT 2.3.0).
    float16_block, _ = outputs(conversions("float16")[1], x[:50], prefer_xnnpack=False)
    assert np.isnan(float16_block).any()  # builtin DEQUANTIZE reads the block-sparse float16 weight as dense
    dense, block, _ = conversions("dynamic")
    dynamic_block, info = outputs(block, x[:50], prefer_xnnpack=True)
    assert info["path"] == "xnnpack"
    expected, _ = outputs(dense, x[:50], prefer_xnnpack=True)
    assert not np.allclose(dynamic_block, expected, atol=1e-3)


def test_converters_own_csr_and_dense_files_are_left_alone(trained_lenet):
    model, _, _, _ = trained_lenet
    sparse = export.to_tflite(magnitude_pruned(model, 0.9), "none", sparse_encoding=True)
    assert op_names(sparse).count(DENSIFY) == 3  # 90 %: the converter chose CSR + DENSIFY itself
    same, report = tflite_sparse.reencode_csr(sparse)
    assert same is sparse and len(report) == 3
    assert all(not e["rewritten"] and e["reason"].startswith("not block-encoded") for e in report)
    plain = export.to_tflite(model, "none", sparse_encoding=True)  # below the converter's 30 % threshold
    assert tflite_sparse.reencode_csr(plain) == (plain, [])


def _mutate(model_bytes, change):
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    tensor = [t for t in model.subgraphs[0].tensors if t.sparsity is not None and list(t.shape) == [100, 300]][0]
    change(model, tensor)
    return flatbuffer_utils.convert_object_to_bytearray(model)


def _block_dim_compressed(model, tensor):
    tensor.sparsity.dimMetadata[2].format = schema.DimensionType.SPARSE_CSR


def _one_value_missing(model, tensor):
    model.buffers[tensor.buffer].data = model.buffers[tensor.buffer].data[:-4]


@pytest.mark.parametrize("change", [_block_dim_compressed, _one_value_missing])
def test_unsupported_layout_is_left_untouched(conversions, change):
    block = _mutate(conversions("none")[1], change)
    new, report = tflite_sparse.reencode_csr(block)
    fc2 = [e for e in report if e["shape"] == (100, 300)][0]
    assert not fc2["rewritten"] and fc2["reason"].startswith("left as it is")
    assert [e["rewritten"] for e in report if e["shape"] != (100, 300)] == [True, True]
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(new))
    block_maps = {tuple(t.shape): list(t.sparsity.blockMap) for t in model.subgraphs[0].tensors if t.sparsity}
    assert block_maps == {(300, 784): [], (100, 300): [1], (10, 100): []}
    assert op_names(new).count(DENSIFY) == 2


def test_not_a_tflite_file_is_a_value_error():
    with pytest.raises(ValueError, match="TFL3"):
        tflite_sparse.reencode_csr(b"\0" * 64)


def _sparsity(order, block_map, metadata):
    return schema.SparsityParametersT(traversalOrder=order, blockMap=block_map, dimMetadata=metadata)


def _csr_level(segments, indices):
    return schema.DimensionMetadataT(
        format=schema.DimensionType.SPARSE_CSR, arraySegmentsType=schema.SparseIndexVector.Int32Vector,
        arraySegments=schema.Int32VectorT(values=segments), arrayIndicesType=schema.SparseIndexVector.Uint8Vector,
        arrayIndices=schema.Uint8VectorT(values=indices))


def _dense_level(size):
    return schema.DimensionMetadataT(format=schema.DimensionType.DENSE, denseSize=size)


def test_to_dense_reads_1x4_blocks_and_ignores_columns_past_the_last_block():
    # Rows: [1 2 0 0 | 0 0 0 0 | 5 6], [0 0 0 0 | 0 0 3 4 | 7 8] with 1x4 blocks on 10 columns: 2 whole blocks.
    sparsity = _sparsity([0, 1, 2], [1], [_dense_level(2), _csr_level([0, 1, 2], [0, 1]), _dense_level(4)])
    values = np.array([1, 2, 0, 0, 0, 0, 3, 4], np.float32)
    dense = tflite_sparse.to_dense(values, (2, 10), sparsity)
    assert dense.tolist() == [[1, 2, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0, 3, 4, 0, 0]]
    assert tflite_sparse.block_shape((2, 10), sparsity) == (1, 4)
    with pytest.raises(tflite_sparse.UnsupportedSparsity, match="9 values stored for 8 positions"):
        tflite_sparse.to_dense(np.zeros(9, np.float32), (2, 10), sparsity)
    with pytest.raises(tflite_sparse.UnsupportedSparsity, match="traversal order"):
        tflite_sparse.to_dense(values, (2, 10), _sparsity([2, 0, 1], [1], sparsity.dimMetadata))


@pytest.mark.parametrize("shape, index_types", [((3, 5), (3, 3)), ((2, 3, 4), (3, 3)), ((2, 300), (2, 2)),
                                                ((1, 70000), (2, 1))])
def test_csr_encoding_round_trips_with_the_smallest_index_types(shape, index_types):
    rng = np.random.default_rng(0)
    dense = (rng.standard_normal(shape) * (rng.random(shape) < 0.5)).astype(np.int8 if len(shape) == 3 else np.float16)
    if shape[-1] == 70000:
        dense[0, -1] = 1  # a column index past 65535 needs Int32
    values, sparsity = tflite_sparse.csr_encoding(dense)
    assert np.array_equal(tflite_sparse.to_dense(values, shape, sparsity), dense)
    assert len(values) == np.count_nonzero(dense) and values.dtype == dense.dtype
    csr = sparsity.dimMetadata[-1]
    assert (csr.arraySegmentsType, csr.arrayIndicesType) == index_types
    assert list(sparsity.traversalOrder) == list(range(len(shape))) and sparsity.blockMap == []

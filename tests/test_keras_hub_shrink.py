"""Structured shrinking inside KerasHub blocks: attention heads and feed-forward units unit-pruned on BERT and ViT
classifiers (tiny configs, trained a step on real Fashion-MNIST), cut out of their blocks with the same outputs and
exported to TFLite, verified in LiteRT; a width-matching layer that is not the consumer is proven wrong and undone.
"""

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402  (Keras 3: KerasHub's stack)

import tfprune  # noqa: E402
from tfprune import tflite  # noqa: E402
from tfprune.experiments import hub_models, models  # noqa: E402


def _case(family, x):
    keras.utils.set_random_seed(0)
    if family == "vit":
        return hub_models.classifier(hub_models.vit_backbone(), 10), x[..., None]
    size = {"intermediate_dim": 256} if family == "gemma" else {}  # Gemma: 2 gates of 128 units (hidden 64)
    return hub_models.classifier(hub_models.token_backbone(family, 16, 49, **size), 10, 49), hub_models.image_tokens(x)


# family: (block path prefix, blocks, [(cut layer, units before, after)] per block; the first ones are pruned)
CUTS = {
    "bert": ("transformer_layer_", (0, 1),
             [("self_attention_layer", 4, 2), ("feedforward_intermediate_dense", 128, 64)]),
    "vit": ("vit_encoder.transformer_block_", (1, 2), [("mha", 4, 2), ("mlp.dense_1", 128, 64)]),
    # Gemma's attention is its own block of EinsumDense (not a registered attention kind): its heads stay
    "gemma": ("decoder_block_", (0, 1), [("ffw_gating", 128, 64), ("ffw_gating_2", 128, 64)]),
}


@pytest.mark.parametrize("family", ["bert", "vit", "gemma"])
def test_heads_and_ffn_units_leave_the_blocks_with_the_same_outputs_and_export(family, small_fashion):
    (x, y), (xt, yt) = small_fashion
    model, inputs = _case(family, x[:256])
    in_place = family == "vit"  # ViTPatchingAndEmbedding cannot be rebuilt from its config
    model = tfprune.make_prunable(model, in_place=in_place)
    inner = tfprune.inner_unit_layers(model)
    hub = model.layers[1].name
    block, blocks, cuts = CUTS[family]
    pruned = [c[0] for c in cuts[:1 if family == "gemma" else 2]]  # a gate is cut with its producer, not pruned
    assert inner == [f"{hub}.{block}{i}.{part}" for i in blocks for part in pruned]  # never the hidden width
    tfprune.prune(model, 0.5, "unit", layers=inner)
    models.compile_model(model).fit(inputs, y[:256], epochs=1, batch_size=64, verbose=0)  # the masks hold
    test_inputs = _case(family, xt[:64])[1]
    before = np.asarray(model(test_inputs))

    result = tfprune.shrink(model, in_place=in_place)
    np.testing.assert_allclose(np.asarray(result.model(test_inputs)), before, atol=1e-5)
    assert result.report.kept == ()
    rows = {r.name: r for r in result.report.layers}
    for i in blocks:
        for name, units_before, units_after in cuts:
            row = rows[f"{hub}.{block}{i}.{name}"]
            assert (row.units_before, row.units_after) == (units_before, units_after), row
    assert rows["logits"].kind == "Dense"  # the plain layer's kind, in place too
    if family != "gemma":  # BERT's CachedMultiHeadAttention is pruned (and stripped) as its parent
        assert rows[f"{hub}.{block}{blocks[0]}.{cuts[0][0]}"].kind == "MultiHeadAttention"
    assert result.report.params_after <= (0.6 if family != "gemma" else 0.75) * result.report.params_before
    assert result.report.params_after == result.model.count_params()
    assert f"{hub}.{block}{blocks[0]}.{cuts[1][0]}" in tfprune.format_shrink_report(result.report)
    figures = tflite.export_variant(result.model, "float", test_inputs, yt[:64], bench_runs=2)
    assert figures["apis"] == "interpreter,compiled_model" and figures["keras_max_abs_diff"] <= 1e-5


class _Gated(keras.layers.Layer):
    """A block whose second Dense reads the block's input, not the first Dense: out = d2(x) + d3(d1(x))."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.d1 = keras.layers.Dense(8, activation="relu", name="d1")
        self.d2 = keras.layers.Dense(8, name="d2")
        self.d3 = keras.layers.Dense(8, name="d3")

    def call(self, x):
        return self.d2(x) + self.d3(self.d1(x))


def test_a_cut_that_changes_the_outputs_is_undone_with_the_reason():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    model = tfprune.make_prunable(keras.Model(inputs, keras.layers.Dense(3, name="out")(_Gated(name="g")(inputs))))
    assert tfprune.inner_unit_layers(model) == ["g.d1", "g.d2"]  # paired by order and width: d1 with d2, wrongly
    tfprune.prune(model, 0.5, "unit", layers=["g.d1"])
    x = np.random.default_rng(0).random((4, 8), np.float32)
    result = tfprune.shrink(model)
    np.testing.assert_allclose(np.asarray(result.model(x)), np.asarray(model(x)), atol=1e-6)
    assert [r.name for r in result.report.layers if r.units_after != r.units_before] == []
    assert any(note.startswith("g.d1: cut undone: the model no longer runs") for note in result.report.kept)


@pytest.mark.parametrize("family", ["bert", "gemma"])
def test_a_shrunk_ffn_rebuilds_from_the_backbones_config_and_saves_as_keras(family, small_fashion, tmp_path):
    (x, _), _ = small_fashion
    model, inputs = _case(family, x[:32])
    model = tfprune.make_prunable(model)
    ffn = [n for n in tfprune.inner_unit_layers(model) if n.endswith(("ffw_gating", "intermediate_dense"))]
    assert len(ffn) == 2
    result = tfprune.shrink(tfprune.prune(model, 0.5, "unit", layers=ffn))
    before = np.asarray(result.model(inputs))

    rebuilt = tfprune.rebuild_from_config(result.model)
    hub, old = rebuilt.layers[1], model.layers[1].get_config()["intermediate_dim"]
    assert type(hub).__name__ == ("BertBackbone" if family == "bert" else "GemmaBackbone")
    assert hub.get_config()["intermediate_dim"] == old // 2  # BERT 128 -> 64; Gemma 256 -> 128 (two gates of 64)
    assert rebuilt.count_params() == result.model.count_params() == result.report.params_after
    path = str(tmp_path / "shrunk.keras")
    rebuilt.save(path)
    np.testing.assert_allclose(np.asarray(keras.models.load_model(path)(inputs)), before, atol=1e-5)


def test_heads_cut_out_have_no_config_and_the_error_names_the_weight(small_fashion):
    (x, _), _ = small_fashion
    model, _ = _case("bert", x[:8])
    model = tfprune.make_prunable(model)
    result = tfprune.shrink(tfprune.prune(model, 0.5, "unit", layers=tfprune.inner_unit_layers(model)))
    with pytest.raises(ValueError, match=r"no config of BertBackbone 'bert_backbone\w*' gives its shrunk weights: "
                                         r".*transformer_layer_0\.self_attention_layer/query/kernel is \(64, 2, 16\)"):
        tfprune.rebuild_from_config(result.model)
    with pytest.raises(ValueError, match=r"holds prunable layers .*: shrink or strip it before rebuild_from_config"):
        tfprune.rebuild_from_config(model)

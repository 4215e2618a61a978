"""KerasHub backbones pruned as a user brings them: BertBackbone, GemmaBackbone and ViTBackbone built from tiny
configs (2 blocks, no weights downloaded), every projection nested in their custom blocks reached and named by path,
subclasses of registered layers (ReversibleEmbedding) honoured or refused with the reason, pruned with weight, unit,
Wanda and 2:4 methods, fine-tuned on real Fashion-MNIST (images for the ViT; the same images as 49-token sequences
for BERT and Gemma), saved and loaded in a fresh process, stripped and exported to TFLite, verified in LiteRT.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")

import keras  # noqa: E402  (Keras 3: KerasHub's stack)

import tfprune  # noqa: E402
from tfprune import tflite  # noqa: E402
from tfprune.experiments import hub_models, models  # noqa: E402
from tfprune.layers import registry  # noqa: E402

FAMILIES = ("bert", "gemma", "vit")
TOKENS = 49  # a 7x7 grid of each image, 16 grey levels


def _backbone(family):
    keras.utils.set_random_seed(0)
    return hub_models.vit_backbone() if family == "vit" else hub_models.token_backbone(family, 16, TOKENS)


def _classifier(family):
    return hub_models.classifier(_backbone(family), 10, TOKENS)


def _inputs(family, x):
    return x[..., None] if family == "vit" else hub_models.image_tokens(x)


def _backbone_inputs(family, x):
    if family == "vit":
        return x[..., None]
    tokens = hub_models.image_tokens(x)
    feeds = {"token_ids": tokens, "padding_mask": np.ones_like(tokens)}
    return {**feeds, "segment_ids": np.zeros_like(tokens)} if family == "bert" else feeds


def _prunable(model, family):
    """ViT's ``ViTPatchingAndEmbedding`` cannot be rebuilt from its own config (KerasHub 0.32): in place."""
    return tfprune.make_prunable(model, in_place=family == "vit")


def _sequence(outputs):
    return np.asarray(outputs["sequence_output"] if isinstance(outputs, dict) else outputs)


def _projection_weights(model):
    """Kernel weights of every Dense and EinsumDense anywhere in ``model`` (inside attention layers too)."""
    return sum(int(np.prod(l.kernel.shape)) for l in model._flatten_layers(include_self=False, recursive=True)
               if type(l).__name__.endswith(("Dense", "EinsumDense")) and hasattr(l, "kernel"))


@pytest.mark.parametrize("family", FAMILIES)
def test_every_projection_of_a_backbone_is_prunable_and_named_by_path(family, small_fashion):
    backbone = _backbone(family)
    x = _backbone_inputs(family, small_fashion[1][0][:8])
    expected, total = _sequence(backbone(x)), _projection_weights(backbone)
    model = _prunable(backbone, family)
    report = tfprune.sparsity_report(model)
    names = [r.name for r in report]
    assert len(set(names)) == len(names)
    projections = sum(r.weights for r in report if r.kind in ("Dense", "EinsumDense", "MultiHeadAttention"))
    assert projections == total  # every one: 100 % of the Dense/EinsumDense weights (biases are not counted)
    block = {"bert": "transformer_layer_0.feedforward_intermediate_dense", "gemma": "decoder_block_1.attention.key",
             "vit": "vit_encoder.transformer_block_2.mlp.dense_1"}[family]
    assert block in names
    np.testing.assert_array_equal(_sequence(model(x)), expected)
    tfprune.prune(model, 0.5, "weight")
    assert tfprune.overall_sparsity(tfprune.sparsity_report(model)) == pytest.approx(0.5, abs=1e-3)


def test_a_model_whose_blocks_cannot_be_cloned_says_to_convert_in_place():
    with pytest.raises(ValueError, match=r"layer 'vit_patching_and_embedding' \(ViTPatchingAndEmbedding\) cannot be "
                                         r"rebuilt from its own config.*make_prunable\(model, in_place=True\)"):
        tfprune.make_prunable(_backbone("vit"))


def test_subclasses_of_registered_layers_are_honoured_or_refused_with_the_reason():
    tied = keras_hub.layers.ReversibleEmbedding(16, 8, name="tied")
    untied = keras_hub.layers.ReversibleEmbedding(16, 8, tie_weights=False, name="untied")

    class OwnSaving(keras.layers.Dense):
        def save_own_variables(self, store):
            super().save_own_variables(store)

    tokens = keras.Input((5,), dtype="int32")
    hidden = tied(tokens)
    logits = tied(keras.layers.Dense(8, name="mix")(untied(tokens) + hidden), reverse=True)
    model = keras.Model(tokens, OwnSaving(4, name="own")(logits))
    assert registry.skip_reason(model.get_layer("untied")) == (
        "ReversibleEmbedding (a subclass of Embedding) makes weights of its own (reverse_embeddings) that tfprune "
        "would not mask")
    assert registry.skip_reason(model.get_layer("own")) == (
        "OwnSaving (a subclass of Dense) defines save_own_variables, which tfprune's masked twin replaces")
    pruned = tfprune.prune(tfprune.make_prunable(model), 0.5, "weight", layers=["tied"])
    layer = pruned.get_layer("tied")
    assert type(layer).__name__ == "PrunableReversibleEmbedding" and layer.tie_weights
    # Its own call runs over the masked embeddings: the reverse projection to logits included.
    h = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    masked = registry.effective_kernel(layer)
    assert (masked == 0).mean() == pytest.approx(0.5)
    np.testing.assert_allclose(np.asarray(layer(h, reverse=True)), h @ masked.T, atol=1e-5)


_CHILD = """
import json, sys
import numpy as np, keras, tfprune
sys.path.insert(0, sys.argv[2])
import test_keras_hub as t
out = {}
for family in t.FAMILIES:
    model = t._prunable(t._classifier(family), family)
    model.load_weights(f"{sys.argv[1]}/{family}.weights.h5")
    x = np.load(f"{sys.argv[1]}/{family}.npy")
    out[family] = {"outputs": np.asarray(model(x)).tolist(),
                   "sparsity": tfprune.overall_sparsity(tfprune.sparsity_report(model))}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_prune_fine_tune_reload_in_a_fresh_process_and_export(small_fashion, tmp_path):
    (x, y), (xt, yt) = small_fashion
    shipped = {}
    for family in FAMILIES:
        model = models.compile_model(_prunable(_classifier(family), family))
        model.fit(_inputs(family, x[:128]), y[:128], epochs=1, batch_size=64, verbose=0,
                  callbacks=[tfprune.callbacks.RankPruning("weight", 0.5)])
        assert tfprune.overall_sparsity(tfprune.sparsity_report(model)) == pytest.approx(0.5, abs=1e-3)
        model.save_weights(str(tmp_path / f"{family}.weights.h5"))
        np.save(tmp_path / f"{family}.npy", _inputs(family, xt[:16]))
        shipped[family] = (model, np.asarray(model(_inputs(family, xt[:16]))))
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), os.path.dirname(__file__)],
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    reloaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for family, (model, outputs) in shipped.items():
        assert reloaded[family]["sparsity"] == pytest.approx(0.5, abs=1e-3), family
        np.testing.assert_allclose(reloaded[family]["outputs"], outputs, atol=1e-6, err_msg=family)
        plain = models.compile_model(tfprune.strip(model, in_place=family == "vit"))
        np.testing.assert_allclose(np.asarray(plain(_inputs(family, xt[:16]))), outputs, atol=1e-6)
        xe, calibration = _inputs(family, xt[:200]), _inputs(family, x[:100])
        keras_accuracy = plain.evaluate(xe, yt[:200], verbose=0)[1]
        for variant in ("float", "dynamic", "int8") if family == "vit" else ("float",):
            figures = tflite.export_variant(plain, variant, xe, yt[:200], calibration, bench_runs=3)
            assert figures["apis"] == "interpreter,compiled_model", (family, variant)  # both APIs ran it
            assert abs(figures["accuracy"] - keras_accuracy) <= (1e-6 if variant == "float" else 0.05), \
                (family, variant)
            assert figures["sparsity"] >= (0.45 if variant != "dynamic" else 0.0), (family, variant)


def test_unit_wanda_and_2_of_4_methods_reach_the_blocks(small_fashion):
    (x, y), _ = small_fashion
    tokens = hub_models.image_tokens(x[:128])
    model = tfprune.make_prunable(_classifier("bert"))
    hub = model.layers[1].name  # bert_backbone (Keras numbers a second one)
    before = np.asarray(model(tokens[:8]))
    tfprune.prune(model, 0.5, "unit")  # heads of each attention, units of each FFN; never the classes
    report = {r.name: r for r in tfprune.sparsity_report(model)}
    assert report[f"{hub}.transformer_layer_1.self_attention_layer"].units_kept == 2
    assert report[f"{hub}.transformer_layer_0.feedforward_intermediate_dense"].units_kept == 64
    assert report["logits"].units_kept == 10
    assert np.abs(np.asarray(model(tokens[:8])) - before).max() > 0

    # Wanda reads the inputs of the Dense layers inside the blocks while the model runs.
    model = tfprune.make_prunable(_classifier("bert"))
    hub = model.layers[1].name
    ffn = [f"{hub}.transformer_layer_{i}.feedforward_{part}_dense" for i in (0, 1) for part in ("intermediate", "output")]
    tfprune.prune(model, 0.5, "wanda", layers=ffn, calibration=(tokens, y[:128]))
    wanda = {r.name: r.sparsity for r in tfprune.sparsity_report(model)}
    assert all(wanda[name] == pytest.approx(0.5) for name in ffn)
    assert wanda[f"{hub}.pooled_dense"] == 0

    # ... and of Gemma's feed-forward EinsumDense layers (btd,df->btf: a Dense along the last axis); its attention
    # projections (btd,ndh->btnh) are refused by name.
    gemma = _classifier("gemma")
    magnitude = tfprune.make_prunable(gemma)  # clones: each prunable copy starts from gemma's weights
    hub = magnitude.layers[1].name
    ffw = [f"{hub}.decoder_block_{i}.{part}" for i in (0, 1) for part in ("ffw_gating", "ffw_gating_2", "ffw_linear")]
    tfprune.prune(magnitude, 0.5, "weight", layers=ffw)
    for method in ("wanda", "sparsegpt"):
        model = tfprune.make_prunable(gemma)
        tfprune.prune(model, 0.5, method, layers=ffw, calibration=(tokens, y[:128]))
        report = {r.name: r.sparsity for r in tfprune.sparsity_report(model)}
        assert all(report[name] == pytest.approx(0.5) for name in ffw), (method, report)
        gate = f"{hub}.decoder_block_0.ffw_gating"  # activations, not magnitudes alone, chose what went
        chose, by_size = (registry.kernel_mask(next(l for l in registry.model_layers(m) if l.name == gate))
                          for m in (model, magnitude))
        assert (chose != by_size).any()
    with pytest.raises(ValueError, match=r"layer '.*decoder_block_0\.attention\.query' is EinsumDense: leave it out"):
        tfprune.prune(model, 0.5, "wanda", layers=[f"{hub}.decoder_block_0.attention.query"],
                      calibration=(tokens, y[:128]))

    model = tfprune.make_prunable(_classifier("gemma"))
    hub = model.layers[1].name
    tfprune.prune(model, None, "nm_2x4")
    checks = tfprune.check_nm(model)
    assert f"{hub}.decoder_block_1.attention.query" in checks and all(c.ok for c in checks.values())

"""tfprune.models: architectures and weight counts."""

import numpy as np
import pytest

from tfprune.experiments import models


def _weights(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def test_fc_1000_has_the_classic_weight_count():
    model = models.build("fc_1000")
    assert _weights(model) == 2_386_000
    assert [l.name for l in model.layers] == ["flatten", "fc1", "fc2", "fc3", "fc4", "logits"]
    assert all(not l.use_bias for l in model.layers[1:])


def test_lenet_300_100_weight_count():
    assert _weights(models.build("lenet_300_100")) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10


def test_small_cnn_has_filters_and_runs_on_28x28():
    model = models.build("small_cnn")
    convs = [l for l in model.layers if l.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [16, 16, 32, 32]
    out = model(np.zeros((2, 28, 28), np.float32))
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_channel_axis_given_explicitly():
    assert models.build("small_cnn", input_shape=(28, 28, 1)).output_shape == (None, 10)


def test_unknown_model_lists_known_names():
    with pytest.raises(ValueError, match="unknown model 'resnet'.*fc_1000, lenet_300_100, small_cnn"):
        models.build("resnet")


def test_models_follow_the_data_shape_and_classes():
    # fc_1000 and LeNet flatten any input (a 1-D feature vector, a 32x32x3 image, a sequence of frames).
    for name, shape in (("fc_1000", (40,)), ("lenet_300_100", (32, 32, 3)), ("lenet_300_100", (28, 13, 2, 2))):
        model = models.build(name, input_shape=shape, num_classes=5)
        assert tuple(model.input_shape[1:]) == shape and model.output_shape == (None, 5)
    cnn = models.build("small_cnn", input_shape=(96, 80, 3), num_classes=7)
    assert cnn.get_layer("conv1").kernel.shape == (3, 3, 3, 16) and cnn.output_shape == (None, 7)
    assert models.build("small_cnn", input_shape=(30, 30)).get_layer("conv1").kernel.shape == (3, 3, 1, 16)


def test_bad_shape_and_classes():
    with pytest.raises(ValueError, match=r"small_cnn takes images .* input_shape \(28,\) is not one"):
        models.build("small_cnn", input_shape=(28,))
    with pytest.raises(ValueError, match=r"input_shape \(0, 5\) must have positive sizes"):
        models.build("fc_1000", input_shape=(0, 5))
    with pytest.raises(ValueError, match="num_classes 1"):
        models.build("fc_1000", num_classes=1)

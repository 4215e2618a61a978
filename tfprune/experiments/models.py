"""Reference models: the classic fc_1000 MLP, LeNet-300-100 and a small VGG-style ConvNet.

Every model adapts to the data: fc_1000 and LeNet flatten inputs of any shape, small_cnn takes images of any size
(H, W) or (H, W, C) (adding the channel axis to grey (H, W) images); each ends in a softmax over the data's classes,
is built in either Keras (``keras="2"``: tf_keras, ``"3"``: Keras 3),
and names its layers so that flags and per-layer plans can refer to them (``fc1``..``fc4``, ``logits``...).
"""

from tfprune import outputs
from tfprune import stacks


def _first(input_shape, keras3_input):
    """(leading layers, kwargs of the first layer): Keras 3 models start from an Input; tf_keras ones give the first
    layer ``input_shape`` (as they always did, so tf_keras baselines stay bit-identical)."""
    if keras3_input:
        return [keras3_input(tuple(input_shape), name="input")], {}
    return [], {"input_shape": input_shape}


def _fc_1000(L, input_shape, num_classes, keras3_input=None):
    # The network of the classic pruning experiment: 4 hidden ReLU layers and the classifier, no biases:
    # 784·1000 + 1000·1000 + 1000·500 + 500·200 + 200·10 = 2,386,000 weights on 28×28 inputs.
    first, shape = _first(input_shape, keras3_input)
    return first + [
        L.Flatten(name="flatten", **shape),
        L.Dense(1000, activation="relu", use_bias=False, name="fc1"),
        L.Dense(1000, activation="relu", use_bias=False, name="fc2"),
        L.Dense(500, activation="relu", use_bias=False, name="fc3"),
        L.Dense(200, activation="relu", use_bias=False, name="fc4"),
        L.Dense(num_classes, activation="softmax", use_bias=False, name="logits"),
    ]


def _lenet_300_100(L, input_shape, num_classes, keras3_input=None):
    # LeNet-300-100 (LeCun et al. 1998) as pruned by Han et al. 2015: 266,610 parameters on 28×28 inputs.
    first, shape = _first(input_shape, keras3_input)
    return first + [
        L.Flatten(name="flatten", **shape),
        L.Dense(300, activation="relu", name="fc1"),
        L.Dense(100, activation="relu", name="fc2"),
        L.Dense(num_classes, activation="softmax", name="logits"),
    ]


def _small_cnn(L, input_shape, num_classes, keras3_input=None):
    # Two VGG-style blocks (two 3×3 convs + 2×2 max-pool each), a Dense head: enough filters to prune, fast on CPU.
    if keras3_input:
        first = [keras3_input(tuple(input_shape), name="input")]
        first += [L.Reshape(tuple(input_shape) + (1,), name="add_channel")] if len(input_shape) == 2 else []
    else:
        first = ([L.Reshape(tuple(input_shape) + (1,), input_shape=input_shape, name="add_channel")]
                 if len(input_shape) == 2 else [L.InputLayer(input_shape=input_shape, name="input")])
    return first + [
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
        L.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv3"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="conv4"),
        L.MaxPooling2D(2, name="pool2"),
        L.Flatten(name="flatten"),
        L.Dense(128, activation="relu", name="fc1"),
        L.Dense(num_classes, activation="softmax", name="logits"),
    ]


BUILDERS = {"fc_1000": _fc_1000, "lenet_300_100": _lenet_300_100, "small_cnn": _small_cnn}
MODEL_NAMES = tuple(sorted(BUILDERS))


def build(name, input_shape=(28, 28), num_classes=10, keras="2"):
    """Builds an untrained reference model (a ``Sequential`` with named layers, softmax output).

    Args:
      name: one of ``MODEL_NAMES`` (``fc_1000``, ``lenet_300_100``, ``small_cnn``).
      input_shape: input shape without the batch axis: any shape for fc_1000 and lenet_300_100 (flattened),
        (H, W) or (H, W, C) images of at least 4x4 for small_cnn.
      num_classes: width of the softmax output.
      keras: ``"2"`` (a tf_keras model) or ``"3"`` (a Keras 3 model, on Keras 3's configured backend).

    Raises:
      ValueError: unknown ``name`` (the message lists the known ones), a bad shape / class count, or an unknown
        ``keras``.
    """
    stack = stacks.by_version(keras)
    if name not in BUILDERS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)}")
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or min(input_shape) <= 0:
        raise ValueError(f"input_shape {input_shape} must have positive sizes")
    if name == "small_cnn" and (len(input_shape) not in (2, 3) or min(input_shape[:2]) < 4):
        raise ValueError(f"small_cnn takes images (H, W) or (H, W, C) of at least 4x4 (two 2x2 poolings); "
                         f"input_shape {input_shape} is not one: use fc_1000 or lenet_300_100, which flatten any "
                         "input")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes {num_classes} must be at least 2")
    k = stack.keras
    keras3_input = k.Input if stack is stacks.KERAS3 else None
    return k.Sequential(BUILDERS[name](k.layers, input_shape, int(num_classes), keras3_input), name=name)


def compile_model(model, learning_rate=1e-3, kind=None):
    """Compiles with Adam and sparse softmax cross-entropy, tracking accuracy (with the model's own Keras stack).

    The loss takes the model's outputs as they are: probabilities or logits (``from_logits``), as ``kind`` says
    (``tfprune.outputs.PROBABILITIES``/``LOGITS``; default ``tfprune.outputs.output_kind(model)``). Returns the
    model."""
    kind = kind or outputs.output_kind(model)
    outputs.check_kind(kind)
    k = stacks.of(model).keras
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=kind == outputs.LOGITS)
    model.compile(optimizer=k.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])
    return model


def calibrate_batchnorm(model, x):
    """Sets every BatchNormalization's moving mean and variance to the statistics of the batch ``x`` (one forward
    pass in training mode with momentum 0: no weight changes), so an untrained model (``weights=None``) passes a
    signal of normal size through its depth instead of one that fades to nothing. Returns the model."""
    k = stacks.of(model).keras
    norms = [l for l in model.layers if isinstance(l, k.layers.BatchNormalization)]
    momenta = [l.momentum for l in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
    return model

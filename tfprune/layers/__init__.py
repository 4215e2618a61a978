"""The prunable layers of both Keras stacks and the registry that says what is prunable and how.

``registry`` (the table of layer kinds every other module asks: masked twin, unit and input axes, MACs, slicing) with
``kinds`` (its record) and ``layouts``/``recurrent`` (each kind's weights as one unit kernel, units last, pure NumPy);
the layer families: ``kernels_tf_keras``/``kernels_keras3`` (Dense, Conv*D, DepthwiseConv2D, EinsumDense, Embedding),
``rnn``/``rnn_keras3`` (SimpleRNN, GRU, LSTM), ``transposed``, ``separable``, ``attention``, ``bidirectional`` and
``custom`` (user layers that opt in); ``in_place`` (a subclassed model's layers converted where they are);
``stored_masks`` (masks held in the variables, for layers whose ``call`` reads them), ``schedule_step`` (the
pruning schedule's step each prunable layer keeps) and ``jax_masks`` (the optimizer step that holds masks on Keras
3's JAX backend).
"""

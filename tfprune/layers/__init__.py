"""The prunable layers of both Keras stacks and the registry that says what is prunable and how.

One module per layer family, each covering both stacks and declaring its ``KINDS`` (the registry's entries):
``dense``, ``conv`` (Conv1D/2D/3D, DepthwiseConv2D), ``embedding``, ``transposed``, ``separable``, ``rnn``
(SimpleRNN, GRU, LSTM), ``einsum``, ``attention``, ``bidirectional``, and ``custom`` (user layers that opt in).
``registry`` collects the families' kinds into the table every other module asks; ``kinds`` is its record;
``layouts``/``recurrent`` map each kind's weights to its unit kernel and back (pure NumPy, written once);
``stored_masks`` is the one prunable-layer protocol (masks held in the variables, methods returning NumPy, one
mask constraint); ``schedule_step`` (the pruning schedule's step each prunable layer keeps), ``jax_masks`` (the
optimizer step that holds masks on Keras 3's JAX backend) and ``in_place`` (a subclassed model's layers converted
where they are).
"""

"""Which weights go: the selection arithmetic, the pruning methods and the coupled channel groups they rank.

``masks`` (pure NumPy: exact counts, ties by position, masks only shrink), ``scoring`` (methods as data: how a kernel
is cut into groups and scored, layer and global scope), ``blocks`` (block pruning's arithmetic), ``nm`` (N:M sparsity:
N kept of every M consecutive inputs of a unit), ``selection`` (which layers a call selects), ``importance`` (Taylor,
Wanda, SparseGPT/OBS, refit, LAMP on Dense kernels), ``patches`` (a convolution's inputs as patch rows and their Grams,
for those methods on convolutions), ``coupling``/``groups`` (the layers that must lose the same channels, joined by
residual merges) and ``group_pruning`` (ranking and zeroing those channels). Nothing here clones or rebuilds a model.
"""

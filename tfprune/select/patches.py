"""A convolution's layer-input statistics as pure NumPy functions: its inputs as patch rows, so that the Dense-kernel
methods of ``importance`` (Wanda, SparseGPT/OBS, refit) work on Conv1D/Conv2D/Conv3D and DepthwiseConv1D/2D.

Layout (what every function here assumes):

- ``x`` is a channels-last batch ``(n, *spatial, cin)`` with 1, 2 or 3 spatial axes (Keras' default
  ``data_format``); ``kernel_size``, ``strides`` and ``dilation_rate`` are an int (every axis) or a tuple with one
  int per spatial axis, as Keras takes them.
- ``padding`` is ``"valid"``, ``"same"`` or (one spatial axis only, as Keras' Conv1D) ``"causal"``, case-insensitive,
  padded with zeros exactly as TensorFlow pads: for ``"same"`` the output has ``ceil(size/stride)`` positions and
  the total pad ``max((out-1)·stride + (k-1)·dilation + 1 - size, 0)`` is split with the smaller half before; for
  ``"causal"`` ``(k-1)·dilation`` zeros go before and none after.
- A **patch** is the input a convolution reads for one output position: one row per (image, output position),
  images first and then positions row-major, as ``output.reshape(-1, cout)`` orders them; its columns are the taps
  in the order of ``kernel.reshape(-1, cout)`` for a Keras kernel ``(*kernel_size, cin, cout)`` (kernel positions
  row-major, then input channels). So ``conv_patches(x, ...) @ kernel.reshape(-1, cout)`` is the convolution's
  output (without bias) reshaped to ``(-1, cout)``: the patches are the layer's Dense inputs ``X``, and
  ``conv_gram`` is the matching ``XᵀX`` that ``importance.obs_prune`` takes with ``kernel.reshape(-1, cout)``.
- **DepthwiseConv** kernels ``(*kernel_size, cin, multiplier)``: channel ``c``'s filters read only channel ``c``'s
  taps, ``conv_patches(x, ...).reshape(rows, prod(kernel_size), cin)[:, :, c]``, and its Dense kernel is
  ``kernel[..., c, :].reshape(prod(kernel_size), multiplier)`` (Keras orders the outputs ``c·multiplier + m``).

Statistics are float64 and accumulate across batches by summing: ``conv_gram``, ``conv_input_sq_sums`` and
``depthwise_gram`` of two batches add up to those of the two stacked. They are computed in chunks of at most
``chunk_rows`` patch rows (whole images, or output rows of one image when an image has more positions), so the
full patch matrix is never held: memory is ``chunk_rows·d·8`` bytes beside the ``d×d`` Gram and one more for each
chunk's product (``d`` the patch width: the default 4096 rows of 3x3x256 patches take 75 MB, each Gram 42 MB).
"""

import math
import operator

import numpy as np

CHUNK_ROWS = 4096
_PADDINGS = ("valid", "same", "causal")


def _check_x(x):
    """``x`` as an array after checking it is a non-empty, finite, real channels-last batch."""
    x = np.asarray(x)
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"x has shape {x.shape}; expected a channels-last batch (n, *spatial, cin) with 1, 2 or 3 "
                         "spatial axes")
    if x.size == 0:
        raise ValueError(f"x has shape {x.shape}; expected a non-empty batch")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"x has dtype {x.dtype}; expected a real number type")
    if not np.all(np.isfinite(x)):
        bad = int(x.size - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"x of shape {x.shape} holds {bad} NaN/inf values; expected finite inputs")
    return x


def _ints(value, rank, name):
    """``value`` (an int or ``rank`` ints, each >= 1) as a tuple of ``rank`` ints."""
    values = (value,) * rank if np.ndim(value) == 0 else tuple(np.ravel(value))
    if len(values) != rank:
        raise ValueError(f"{name} {value!r} has {len(values)} entries; expected an int or {rank} ints, one per "
                         f"spatial axis of x")
    try:
        ints = tuple(operator.index(v) for v in values)
    except TypeError:
        raise ValueError(f"{name} {value!r} is not an int or a tuple of ints") from None
    if min(ints) < 1:
        raise ValueError(f"{name} {value!r} must be at least 1 on every axis")
    return ints


class _Geometry:
    """A convolution over ``x``: kernel, strides, dilation and zero pads ``(before, after)`` per spatial axis, the
    output positions per axis and the patch width ``d = prod(kernel)·cin``."""

    def __init__(self, x, kernel_size, strides, padding, dilation_rate):
        rank = x.ndim - 2
        self.kernel = _ints(kernel_size, rank, "kernel_size")
        self.strides = _ints(strides, rank, "strides")
        self.dilation = _ints(dilation_rate, rank, "dilation_rate")
        mode = padding.lower() if isinstance(padding, str) else padding
        if mode not in _PADDINGS or (mode == "causal" and rank != 1):
            raise ValueError(f"padding {padding!r} is not one of 'valid', 'same' (or 'causal' with one spatial "
                             f"axis; x has {rank})")
        self.pads, self.out = [], []
        for size, k, stride, dilation in zip(x.shape[1:-1], self.kernel, self.strides, self.dilation):
            span = (k - 1) * dilation + 1
            if mode == "same":
                out = -(-size // stride)
                total = max((out - 1) * stride + span - size, 0)
                self.pads.append((total // 2, total - total // 2))
            else:
                before = span - 1 if mode == "causal" else 0
                if size + before < span:
                    raise ValueError(f"x has shape {x.shape}: spatial size {size} is smaller than the dilated kernel "
                                     f"span {span} (kernel_size {kernel_size!r}, dilation_rate {dilation_rate!r}) "
                                     f"with padding {padding!r}")
                out = (size + before - span) // stride + 1
                self.pads.append((before, 0))
            self.out.append(out)
        self.positions = math.prod(self.out)
        self.taps = math.prod(self.kernel)
        self.width = self.taps * x.shape[-1]

    def view(self, images):
        """Read-only patch view ``(b, *out, *kernel, cin)`` of a batch ``images`` (zero-padded copy)."""
        padded = np.pad(images, [(0, 0), *self.pads, (0, 0)])
        rank = len(self.kernel)
        spans = [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilation)]
        windows = np.lib.stride_tricks.sliding_window_view(padded, spans, axis=tuple(range(1, rank + 1)))
        # windows: (b, *starts, cin, *spans) -> every stride-th start, every dilation-th tap
        index = ((slice(None),) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(self.out, self.strides))
                 + (slice(None),) + tuple(slice(None, None, d) for d in self.dilation))
        return np.moveaxis(windows[index], rank + 1, -1)

    def chunks(self, x, chunk_rows, dtype=np.float64):
        """The patch matrix of ``x`` in consecutive pieces ``(rows, d)`` of at most ``chunk_rows`` rows (at least one
        output row, along the first spatial axis, of one image), in ``dtype``."""
        try:
            chunk_rows = operator.index(chunk_rows)
        except TypeError:
            raise ValueError(f"chunk_rows {chunk_rows!r} is not an int") from None
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows {chunk_rows!r} must be at least 1")
        images = max(1, chunk_rows // self.positions)
        lines = max(1, chunk_rows // (self.positions // self.out[0]))
        for start in range(0, len(x), images):
            view = self.view(np.asarray(x[start:start + images], dtype))
            if self.positions <= chunk_rows:
                yield view.reshape(-1, self.width)
                continue
            for line in range(0, self.out[0], lines):
                yield view[:, line:line + lines].reshape(-1, self.width)


def _accumulator(channels, size, augmented):
    """Zeros for a Gram ``(*channels, size, size)``, or ``(*channels, size+1, size+1)`` when ``augmented``, and the
    view of its ``PᵀP`` part (accumulated in place, so the augmented Gram costs no copy)."""
    out = np.zeros(tuple(channels) + (size + bool(augmented),) * 2)
    return out, out[..., :size, :size]


def _augment(out, sums, count):
    """The augmented Gram of ``[P, 1]``: ``out`` with ``Σp`` (..., d) in its last row and column, the row count in
    its corner."""
    out[..., :-1, -1] = out[..., -1, :-1] = sums
    out[..., -1, -1] = count
    return out


def conv_patches(x, kernel_size, strides=1, padding="valid", dilation_rate=1):
    """The inputs of a convolution as Dense inputs: one patch row per (image, output position).

    Args:
      x: channels-last batch ``(n, *spatial, cin)``, 1 to 3 spatial axes.
      kernel_size, strides, dilation_rate: an int or one int (>= 1) per spatial axis, as the Keras layer's.
      padding: ``"valid"``, ``"same"`` or ``"causal"`` (one spatial axis), as the Keras layer's.

    Returns:
      float64 ``(n·prod(out), prod(kernel_size)·cin)``: rows image-major then output positions row-major, columns
      in the order of ``kernel.reshape(-1, cout)``, so ``conv_patches(x, ...) @ kernel.reshape(-1, cout)`` equals
      the Keras layer's output without bias, reshaped to ``(-1, cout)``. Holds the whole matrix: for statistics
      of large inputs use ``conv_gram`` or ``conv_input_sq_sums``.

    Raises:
      ValueError: naming the bad value: x not of rank 3 to 5, empty, not real or with NaN/inf; kernel_size,
        strides or dilation_rate not one int (>= 1) per spatial axis; padding not valid/same/causal; a spatial
        size smaller than the dilated kernel with padding "valid".
    """
    x = _check_x(x)
    geometry = _Geometry(x, kernel_size, strides, padding, dilation_rate)
    return geometry.view(np.asarray(x, np.float64)).reshape(-1, geometry.width)


def conv_gram(x, kernel_size, strides=1, padding="valid", dilation_rate=1, augmented=False, chunk_rows=CHUNK_ROWS,
              fast=False):
    """The Gram ``PᵀP`` of ``conv_patches(x, ...)``, accumulated over chunks of at most ``chunk_rows`` patch rows
    (the patch matrix is never held whole): the ``gram`` that ``importance.obs_prune`` takes with the layer's
    ``kernel.reshape(-1, cout)``. Grams of two batches add up to the Gram of the two stacked.

    Args:
      x, kernel_size, strides, padding, dilation_rate: as ``conv_patches``.
      augmented: also return what a bias-aware least-squares refit needs: the Gram of ``[P, 1]``.
      chunk_rows: patch rows per chunk (>= 1); memory is ``chunk_rows·d·8`` bytes beside twice the Gram's.
      fast: each chunk's products in float32 (BLAS sgemm, about twice as fast; relative error ~1e-7 per chunk), the
        totals in float64; else float64 throughout.

    Returns:
      float64 ``(d, d)``, ``d = prod(kernel_size)·cin``; with ``augmented``, ``(d+1, d+1)``: ``[:d, :d]`` is
      ``PᵀP``, ``[:d, d]`` (and ``[d, :d]``) the patch column sums ``Σp``, ``[d, d]`` the row count
      ``n·prod(out)``. The augmented Grams of batches add up too.

    Raises:
      ValueError: as ``conv_patches``; chunk_rows < 1.
    """
    x = _check_x(x)
    geometry = _Geometry(x, kernel_size, strides, padding, dilation_rate)
    out, core = _accumulator((), geometry.width, augmented)
    sums, count = np.zeros(geometry.width), 0
    for patches in geometry.chunks(x, chunk_rows, np.float32 if fast else np.float64):
        core += patches.T @ patches
        if augmented:
            sums += patches.sum(axis=0)
            count += len(patches)
    return _augment(out, sums, count) if augmented else out


def conv_input_sq_sums(x, kernel_size, strides=1, padding="valid", dilation_rate=1, chunk_rows=CHUNK_ROWS):
    """Σ p² of each patch column (the diagonal of ``conv_gram``, without computing the Gram): float64
    ``(prod(kernel_size)·cin,)``, in the rows' order of ``kernel.reshape(-1, cout)``, padding zeros counted as
    TensorFlow computes them. Wanda's ``||X_i||`` for a convolution is its square root (``importance.wanda_scores``
    on ``kernel.reshape(-1, cout)``); for a DepthwiseConv, ``.reshape(prod(kernel_size), cin)[:, c]`` is channel
    ``c``'s. Sums of batches add up.

    Raises:
      ValueError: as ``conv_gram``.
    """
    x = _check_x(x)
    geometry = _Geometry(x, kernel_size, strides, padding, dilation_rate)
    sums = np.zeros(geometry.width)
    for patches in geometry.chunks(x, chunk_rows):
        sums += np.einsum("ij,ij->j", patches, patches)
    return sums


def depthwise_gram(x, kernel_size, strides=1, padding="valid", dilation_rate=1, augmented=False,
                   chunk_rows=CHUNK_ROWS):
    """Per input channel, the Gram of a DepthwiseConv's inputs over that channel's taps.

    Channel ``c``'s Dense inputs are its taps ``T_c = conv_patches(x, ...).reshape(rows, prod(kernel_size),
    cin)[:, :, c]`` and its Dense kernel is ``kernel[..., c, :].reshape(prod(kernel_size), multiplier)`` for a
    Keras DepthwiseConv kernel ``(*kernel_size, cin, multiplier)``: ``T_c @ that`` is the layer's output channels
    ``c·multiplier ... c·multiplier + multiplier - 1`` (without bias), reshaped to ``(-1, multiplier)``. So
    ``importance.obs_prune(kernel[..., c, :].reshape(-1, multiplier), depthwise_gram(...)[c], ...)`` prunes
    channel ``c``'s filters. Grams of batches add up.

    Args:
      x, kernel_size, strides, padding, dilation_rate, chunk_rows: as ``conv_gram`` (DepthwiseConv1D: one
        spatial axis, DepthwiseConv2D: two).
      augmented: per channel the Gram of ``[T_c, 1]``, laid out as ``conv_gram``'s augmented one.

    Returns:
      float64 ``(cin, k, k)``, ``k = prod(kernel_size)``; with ``augmented``, ``(cin, k+1, k+1)``.

    Raises:
      ValueError: as ``conv_gram``.
    """
    x = _check_x(x)
    geometry = _Geometry(x, kernel_size, strides, padding, dilation_rate)
    channels = x.shape[-1]
    out, core = _accumulator((channels,), geometry.taps, augmented)
    sums, count = np.zeros((channels, geometry.taps)), 0
    for patches in geometry.chunks(x, chunk_rows):
        taps = patches.reshape(len(patches), geometry.taps, channels).transpose(2, 0, 1)  # (cin, rows, k)
        core += np.matmul(taps.transpose(0, 2, 1), taps)
        if augmented:
            sums += taps.sum(axis=1)
            count += len(patches)
    return _augment(out, sums, count) if augmented else out


__all__ = ["conv_gram", "conv_input_sq_sums", "conv_patches", "depthwise_gram"]

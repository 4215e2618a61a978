"""``Calibration``: the few training examples statistics methods (``wanda``, ``taylor``, ``sparsegpt``...) read."""

import dataclasses

import numpy as np

DEFAULT_BATCH_SIZE = 64


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Calibration data: ``x`` (n, *input shape) model inputs, ``y`` their labels ((n,) class ids or (n, classes)
    one-hot; needed by the gradient methods only), run in batches of ``batch_size``. ``loss``: None (cross-entropy,
    ``from_logits`` as the model's outputs are; sparse for class ids) or a callable ``(y_true, y_pred) -> scalar``
    of the model's stack (differentiable on its backend).

    Use training examples, never the test split: the statistics shape the pruned model.

    Raises:
      ValueError: empty or non-finite ``x``, ``y`` of another length, ``batch_size`` < 1.
    """
    x: object
    y: object = None
    batch_size: int = DEFAULT_BATCH_SIZE
    loss: object = None

    def __post_init__(self):
        x = np.asarray(self.x)
        if x.ndim < 1 or len(x) == 0:
            raise ValueError(f"calibration inputs have shape {x.shape}; expected (n, ...) with n >= 1")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            raise ValueError("calibration inputs hold NaN or inf")
        if self.y is not None and len(self.y) != len(x):
            raise ValueError(f"calibration labels have {len(self.y)} rows but the inputs {len(x)}; expected equal")
        if int(self.batch_size) < 1:
            raise ValueError(f"calibration batch_size {self.batch_size!r} must be at least 1")
        object.__setattr__(self, "x", x.astype(np.float32) if x.dtype == np.float64 else x)

    def __len__(self):
        return len(self.x)

    def batches(self):
        """(x batch, y batch or None), in order."""
        step = int(self.batch_size)
        for start in range(0, len(self.x), step):
            yield self.x[start:start + step], None if self.y is None else np.asarray(self.y[start:start + step])


def as_calibration(value, method):
    """``value`` as a ``Calibration``: one already, an ``(x, y)`` pair or inputs ``x`` alone.

    Raises:
      ValueError: None (naming ``method``, which needs calibration data).
    """
    if value is None:
        raise ValueError(f"method {method!r} reads calibration statistics: pass calibration=(x, y), a few hundred "
                         "training examples (tfprune.Calibration), never the test split")
    if isinstance(value, Calibration):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        return Calibration(*value)
    return Calibration(value)


__all__ = ["Calibration", "DEFAULT_BATCH_SIZE", "as_calibration"]

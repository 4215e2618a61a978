"""The pruning schedule's step, kept in every prunable layer as TF-MOT keeps its ``pruning_step``.

``RankPruning`` writes the step it is at into each prunable layer before every training batch and reads it back when
training begins, so a model saved mid-fine-tune (``.keras`` or ``.h5``, either stack) and loaded again resumes its
schedule where it was. The step is a plain int in the layer's config (``pruning_step``), not a variable: files
written before it existed load unchanged (the step is then 0), the forward pass never sees it, and ``strip`` leaves
it out of the plain model.
"""

STEP_KEY = "pruning_step"


class ScheduleStep:
    """Mixed into every prunable layer class: the ``pruning_step`` keyword (an int >= 0, default 0) and its config."""

    def __init__(self, *args, pruning_step=0, **kwargs):
        super().__init__(*args, **kwargs)
        set_step(self, pruning_step)

    def get_config(self):
        config = super().get_config()
        config[STEP_KEY] = step_of(self)
        return config


def step_of(layer):
    """The schedule step stored in a prunable layer (0 for a layer converted in place and never trained)."""
    return int(getattr(layer, "pruning_step", 0))


def set_step(layer, step):
    """Stores ``step`` in a prunable layer. Written before every training batch, so it bypasses Keras' attribute
    tracking (an int is nothing Keras tracks; docs/DESIGN_NOTES.md, "Schedule step")."""
    layer.__dict__["pruning_step"] = int(step)


def without_step(config):
    """A layer config without the step: what the layer's plain class takes."""
    return {k: v for k, v in config.items() if k != STEP_KEY}

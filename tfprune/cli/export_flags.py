"""Flags of how TFLite files are exported, shared by the mains that export (sweep, compare, fit_budget, export)."""

from absl import flags

EXPORT_SOFTMAX = flags.DEFINE_bool(
    "export_softmax", False, "When the model outputs logits (it ends in Dense(classes) with no softmax), end its "
    "exported TFLite files in a softmax so that they output probabilities; without it they output logits as the "
    "model does. Each model card's 'outputs' says which a file gives, 'softmax_appended' whether tfprune added it.")

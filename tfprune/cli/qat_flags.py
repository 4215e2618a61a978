"""Flags of sparsity-preserving quantization-aware training, shared by the mains that run it (sweep, compare,
fit_budget): ``--qat_epochs`` and ``--qat_learning_rate``, read into a ``FineTune`` by ``finetune_fields``."""

from absl import flags

from tfprune.cli import app as cli_app
from tfprune.experiments import config as config_lib

QAT_EPOCHS = flags.DEFINE_integer(
    "qat_epochs", 0, "After fine-tuning, epochs of sparsity-preserving quantization-aware training (int8 fake "
    "quantization, every pruned weight kept at zero: TF-MOT's prune-preserving QAT on tf_keras, tfprune's on Keras "
    "3) of the model each point or probe ships (the shrunk one for unit/group methods), exported in the int8 "
    "variants as 'qat int8' files beside the post-training int8 ones (in fit_budget: more candidates); 0 = none. "
    "A sweep needs int8 or int8+sparse in --export.", lower_bound=0)
QAT_LEARNING_RATE = flags.DEFINE_float("qat_learning_rate", config_lib.DEFAULT_QAT_LEARNING_RATE,
                                       "Adam learning rate of --qat_epochs.", lower_bound=0.0)
cli_app.register_finite("qat_learning_rate")


def finetune_fields():
    """The ``FineTune`` fields these flags set."""
    return {"qat_epochs": QAT_EPOCHS.value, "qat_learning_rate": QAT_LEARNING_RATE.value}

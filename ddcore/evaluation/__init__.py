"""Training and testing networks on a synthetic set (public): the pieces evaluators are built from.

* :mod:`ddcore.evaluation.train` — one classifier trained with the DC-family protocol, test accuracy,
  class-balanced test subsets;
* :mod:`ddcore.evaluation.ensemble` — many classifiers trained at once as one vectorised ``torch.func`` ensemble.
"""

from ddcore.evaluation.ensemble import can_vectorize, ensemble_accuracy, train_ensemble
from ddcore.evaluation.train import (
    LOSSES,
    balanced_subset_indices,
    classification_loss,
    epoch_learning_rates,
    evaluate_accuracy,
    iter_test_batches,
    train_classifier,
)

__all__ = [
    "LOSSES", "balanced_subset_indices", "can_vectorize", "classification_loss", "ensemble_accuracy",
    "epoch_learning_rates", "evaluate_accuracy", "iter_test_batches", "train_classifier", "train_ensemble",
]

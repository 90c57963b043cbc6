"""Training and testing networks on a synthetic set (public): the pieces evaluators are built from.

* :mod:`ddcore.evaluation.train` — one classifier trained with the DC-family protocol, test accuracy,
  class-balanced test subsets;
* :mod:`ddcore.evaluation.ensemble` — many classifiers trained at once as one vectorised ``torch.func`` ensemble;
* ``run_concurrently`` / ``split_threads`` — independent training jobs side by side on CPU threads, each on its
  share of the cores (what ``train_from_scratch`` and the applications' evaluators use on a CPU).
"""

from ddcore.evaluation._concurrent import run_concurrently, split_threads

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
    "epoch_learning_rates", "evaluate_accuracy", "iter_test_batches", "run_concurrently", "split_threads",
    "train_classifier", "train_ensemble",
]

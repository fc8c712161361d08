"""The model family: a frozen expert plus m >= 1 adapters; softmax / input-free / sigmoid
gates; categorical / Gaussian / Laplace experts (see `moejax.mix.spec`). The paper's model
(`moejax.ModelSpec`) is its m = 1, softmax, categorical member.

The estimators (`fit`, `fit_data`, `fit_multistart`, `prepare_data`, `Bounds`, `pack`, ...)
live in `moejax.estimation` and are re-exported here lazily, so that either package can be
imported first.
"""

from importlib import import_module
from typing import Any

from moejax.mix.density import (
    frozen_logpdf,
    log_class_probs,
    log_density,
    log_likelihood,
    predictors,
    responsibilities,
    row_loglik,
)
from moejax.mix.sampling import sample, sample_block, sample_responses
from moejax.mix.spec import GATES, LIKELIHOODS, MixParams, MixSpec
from moejax.mix.truth import MixTruth, drifting_truth, fixed_truth

_ESTIMATION = {
    "Bounds": "moejax.estimation.bounds",
    "pack": "moejax.estimation.bounds",
    "unpack": "moejax.estimation.bounds",
    "FitData": "moejax.estimation.estimators",
    "FitResult": "moejax.estimation.estimators",
    "fit": "moejax.estimation.estimators",
    "fit_data": "moejax.estimation.estimators",
    "fit_multistart": "moejax.estimation.estimators",
    "prepare_data": "moejax.estimation.estimators",
    "init_near_truth": "moejax.estimation.init",
    "random_inits": "moejax.estimation.init",
}


def __getattr__(name: str) -> Any:
    if name in _ESTIMATION:
        return getattr(import_module(_ESTIMATION[name]), name)
    raise AttributeError(f"module 'moejax.mix' has no attribute {name!r}")


__all__ = [
    "GATES",
    "LIKELIHOODS",
    "Bounds",
    "FitData",
    "FitResult",
    "MixParams",
    "MixSpec",
    "MixTruth",
    "drifting_truth",
    "fit",
    "fit_data",
    "fit_multistart",
    "fixed_truth",
    "frozen_logpdf",
    "init_near_truth",
    "log_class_probs",
    "log_density",
    "log_likelihood",
    "pack",
    "predictors",
    "prepare_data",
    "random_inits",
    "responsibilities",
    "row_loglik",
    "sample",
    "sample_block",
    "sample_responses",
    "unpack",
]

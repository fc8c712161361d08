"""The model family: a frozen expert plus m >= 1 adapters; softmax / input-free / sigmoid
gates; categorical / Gaussian / Laplace experts (see `moejax.mix.spec`). The paper's model
(`moejax.ModelSpec`) is its m = 1, softmax, categorical member."""

from moejax.estimation.bounds import Bounds, pack, unpack
from moejax.estimation.estimators import (
    FitData,
    FitResult,
    fit,
    fit_data,
    fit_multistart,
    prepare_data,
)
from moejax.estimation.init import init_near_truth, random_inits
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

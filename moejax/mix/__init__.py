"""The general contaminated mixture: m adapters, softmax / input-free / sigmoid gates,
categorical / Gaussian / Laplace experts (see `moejax.mix.spec`)."""

from moejax.mix.density import (
    frozen_logpdf,
    log_class_probs,
    log_density,
    log_likelihood,
    predictors,
    responsibilities,
    row_loglik,
)
from moejax.mix.fit import MixBounds, MixData, fit, fit_data, init_near_truth, pack, prepare, unpack
from moejax.mix.sampling import sample, sample_block, sample_responses
from moejax.mix.spec import GATES, LIKELIHOODS, MixParams, MixSpec
from moejax.mix.truth import MixTruth, drifting_truth, fixed_truth

__all__ = [
    "GATES",
    "LIKELIHOODS",
    "MixBounds",
    "MixData",
    "MixParams",
    "MixSpec",
    "MixTruth",
    "drifting_truth",
    "fit",
    "fit_data",
    "fixed_truth",
    "frozen_logpdf",
    "init_near_truth",
    "log_class_probs",
    "log_density",
    "log_likelihood",
    "pack",
    "predictors",
    "prepare",
    "responsibilities",
    "row_loglik",
    "sample",
    "sample_block",
    "sample_responses",
    "unpack",
]

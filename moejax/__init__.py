"""moejax: estimation-rate studies for contaminated mixtures of multinomial logistic experts.

Importing moejax turns on float64 in JAX (``jax_enable_x64``): every estimate is float64.

Two faces of one model family: the paper's model (`ModelSpec`, `Params`, `sample`,
`log_likelihood`, `class_probs`, `fit`, ...) and the general mixture `moejax.mix` (m adapters,
three gates, categorical / Gaussian / Laplace experts), over the same code.
"""

import jax

jax.config.update("jax_enable_x64", True)

from moejax import estimation, mix  # noqa: E402
from moejax.estimate import fit, fit_multistart, init_near_truth, random_inits  # noqa: E402
from moejax.estimation.bounds import Bounds  # noqa: E402
from moejax.estimation.estimators import FitResult, status_name  # noqa: E402
from moejax.estimation.solvers import (  # noqa: E402
    BAD_DATA,
    CONVERGED,
    MAX_ITER,
    NONFINITE,
    STALLED,
    STATUS_NAMES,
)
from moejax.experts import BUILTIN_ACTIVATIONS, Expert  # noqa: E402
from moejax.losses import Errors, hellinger_distance, parameter_errors  # noqa: E402
from moejax.model import (  # noqa: E402
    ModelSpec,
    Params,
    adapter_posterior,
    class_probs,
    gate_logit,
    log_class_probs,
    log_density,
    log_likelihood,
)
from moejax.sampling import (  # noqa: E402
    sample,
    sample_block,
    sample_blocked,
    sample_covariates,
    sample_labels,
)
from moejax.truth import Truth, heterogeneous_truth, homogeneous_truth, truth_at  # noqa: E402
from moejax.voronoi import weighted_voronoi_loss  # noqa: E402

__version__ = "0.1.0"

#: Names served lazily (see `__getattr__`): the engine and the report are layers above the
#: model, and importing them on `import moejax` would load the sweep and plotting code first.
_LAZY = {
    "simulate": ("moejax.sweep.simulate", "simulate"),
    "problem": ("moejax.sweep.simulate", "problem"),
    "Problem": ("moejax.sweep.simulate", "Problem"),
    "slopes": ("moejax.report.api", "slopes"),
    "coverage": ("moejax.report.coverage", "coverage_rows"),
    "use_all_cores": ("moejax.devices", "use_all_cores"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moejax' has no attribute {name!r}")


__all__ = [
    "BAD_DATA",
    "BUILTIN_ACTIVATIONS",
    "CONVERGED",
    "MAX_ITER",
    "NONFINITE",
    "STALLED",
    "STATUS_NAMES",
    "Bounds",
    "Errors",
    "Expert",
    "FitResult",
    "ModelSpec",
    "Params",
    "Problem",
    "Truth",
    "adapter_posterior",
    "class_probs",
    "coverage",
    "estimation",
    "fit",
    "fit_multistart",
    "gate_logit",
    "hellinger_distance",
    "heterogeneous_truth",
    "homogeneous_truth",
    "init_near_truth",
    "log_class_probs",
    "log_density",
    "log_likelihood",
    "mix",
    "parameter_errors",
    "problem",
    "random_inits",
    "sample",
    "sample_block",
    "sample_blocked",
    "sample_covariates",
    "sample_labels",
    "simulate",
    "slopes",
    "status_name",
    "truth_at",
    "use_all_cores",
    "weighted_voronoi_loss",
]

"""Estimators for every model of the family: EM and direct MLE on a box, multi-start,
pluggable solvers, initialisation. (`moejax.fit`, the function, is the paper model's face over
these estimators; it lives in `moejax.estimate` and no longer hides a subpackage.)"""

from moejax.estimation.bounds import Bounds, at_bound, pack, unpack
from moejax.estimation.estimators import (
    EM_ACCELS,
    METHODS,
    FitData,
    FitResult,
    best_fit,
    fit,
    fit_data,
    fit_multistart,
    prepare_data,
    status_name,
)
from moejax.estimation.init import INIT_MODES, init_near_truth, random_inits
from moejax.estimation.solvers import (
    CONVERGED,
    MAX_ITER,
    NONFINITE,
    SOLVERS,
    STALLED,
    STATUS_NAMES,
    JaxoptBFGS,
    OptaxLBFGS,
    ProjectedNewton,
    SolveResult,
    get_solver,
)

__all__ = [
    "CONVERGED",
    "EM_ACCELS",
    "INIT_MODES",
    "MAX_ITER",
    "METHODS",
    "NONFINITE",
    "SOLVERS",
    "STALLED",
    "STATUS_NAMES",
    "Bounds",
    "FitData",
    "FitResult",
    "JaxoptBFGS",
    "OptaxLBFGS",
    "ProjectedNewton",
    "SolveResult",
    "at_bound",
    "best_fit",
    "fit",
    "fit_data",
    "fit_multistart",
    "get_solver",
    "init_near_truth",
    "pack",
    "prepare_data",
    "random_inits",
    "status_name",
    "unpack",
]

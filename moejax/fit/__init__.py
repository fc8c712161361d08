"""Estimators: EM and direct MLE on a box, pluggable solvers, initialisation."""

from moejax.fit.bounds import Bounds, at_bound, pack, unpack
from moejax.fit.estimators import METHODS, FitResult, fit, status_name
from moejax.fit.init import INIT_MODES, fit_multistart, init_near_truth, init_truth, random_inits
from moejax.fit.solvers import (
    SOLVERS,
    STATUS_NAMES,
    JaxoptBFGS,
    OptaxLBFGS,
    ProjectedNewton,
    SolveResult,
    get_solver,
)

__all__ = [
    "INIT_MODES",
    "METHODS",
    "SOLVERS",
    "STATUS_NAMES",
    "Bounds",
    "FitResult",
    "JaxoptBFGS",
    "OptaxLBFGS",
    "ProjectedNewton",
    "SolveResult",
    "at_bound",
    "fit",
    "fit_multistart",
    "get_solver",
    "init_near_truth",
    "init_truth",
    "pack",
    "random_inits",
    "status_name",
    "unpack",
]

"""The objectives gdexp descends on, in one registry: analytic test functions (``analytic``) and
learning problems (``learning``: a model and a loss over a data set from ``data``), all built as
the same ``Objective`` (``base``), and models from theory papers (``theory``); every name the config group ``objective`` offers."""
from __future__ import annotations

from typing import Callable

from .analytic import (beale, booth, himmelblau, multi_well, muller_brown, quadratic, rastrigin,
                       rosenbrock, styblinski_tang)
from .base import MAX_LISTED_MINIMA, Minimum, Objective, colsum, contract
from .data import DATASETS, Dataset
from .learning import least_squares, logistic, mlp
from .theory import lessard, strict_saddle, uv

__all__ = ["DATASETS", "Dataset", "MAX_LISTED_MINIMA", "Minimum", "OBJECTIVES", "Objective",
           "colsum", "contract"]

OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "quadratic": quadratic,
    "rosenbrock": rosenbrock,
    "multi_well": multi_well,
    "himmelblau": himmelblau,
    "styblinski_tang": styblinski_tang,
    "muller_brown": muller_brown,
    "booth": booth,
    "rastrigin": rastrigin,
    "beale": beale,
    "least_squares": least_squares,
    "logistic": logistic,
    "mlp": mlp,
    "uv": uv,
    "lessard": lessard,
    "strict_saddle": strict_saddle,
}

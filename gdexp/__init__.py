"""gdexp: experiments on gradient descent."""
__version__ = "0.1.0"
from .descent import Armijo, Result, Status, Trace, run
from .objectives import OBJECTIVES, Minimum, Objective
from .optimizers import OPTIMIZERS, Optimizer

__all__ = ["Armijo", "Minimum", "OBJECTIVES", "OPTIMIZERS", "Objective", "Optimizer",
           "Result", "Status", "Trace", "run"]

"""gdexp: experiments on gradient descent."""
__version__ = "0.1.0"

# The public names load on first use (PEP 562): commands that never descend, such as
# `gdexp run --help`, do not pay for importing numpy and autograd.
_EXPORTS = {"Armijo": "descent", "Result": "descent", "Status": "descent", "Trace": "descent",
            "run": "descent", "Minimum": "objectives", "OBJECTIVES": "objectives",
            "Objective": "objectives", "OPTIMIZERS": "optimizers", "Optimizer": "optimizers"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))

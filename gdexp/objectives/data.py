"""Data sets for learning objectives: synthetic generators and scikit-learn's bundled sets,
standardised and split once, each with a content digest."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from .base import _bool_arg, _int_arg, _real_arg

REGRESSION = "regression"
CLASSIFICATION = "classification"


@dataclass(frozen=True)
class Dataset:
    """A split, preprocessed data set. Rows are samples; ``y`` is float for regression and
    integer class labels 0..k−1 for classification. Arrays are read-only."""

    name: str
    task: str                # REGRESSION or CLASSIFICATION
    x_train: np.ndarray      # (m, p)
    y_train: np.ndarray      # (m,)
    x_test: np.ndarray       # (m_test, p); m_test may be 0
    y_test: np.ndarray
    n_classes: int = 0       # classification only
    digest: str = ""         # sha256 of the arrays the run sees, after split and preprocessing
    params: dict = field(default_factory=dict)

    @property
    def n_samples(self) -> int:
        return self.x_train.shape[0]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def describe(self) -> dict:
        """Identity of the data for a run's record: name, shapes, digest, task."""
        return {"name": self.name, "task": self.task, "digest": self.digest,
                "n_train": self.n_samples, "n_test": int(self.x_test.shape[0]),
                "n_features": self.n_features, "n_classes": self.n_classes}


def _readonly(a, dtype) -> np.ndarray:
    out = np.array(a, dtype=dtype)
    out.setflags(write=False)
    return out


def digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def prepare(name: str, task: str, x: np.ndarray, y: np.ndarray, *, standardize: bool,
            test_fraction: float, seed: int, params: dict) -> Dataset:
    """Split (seeded permutation) and standardise with the training statistics only.

    Standardising makes every feature mean 0, variance 1 on the training rows (a constant
    feature is left at 0); for regression the target is standardised too, so losses and
    learning rates have comparable scales across data sets.
    """
    x = np.asarray(x, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    m = x.shape[0]
    n_test = int(round(test_fraction * m))
    if n_test and m - n_test < 1:
        raise ValueError(f"test_fraction must leave training samples, got {test_fraction}")
    order = np.random.default_rng([seed, 0xDA7A]).permutation(m) if n_test else np.arange(m)
    train, test = order[n_test:], order[:n_test]
    if task == CLASSIFICATION:
        classes, y = np.unique(np.asarray(y), return_inverse=True)
        y = y.astype(np.int64)
        n_classes = len(classes)
    else:
        y = np.asarray(y, dtype=float)
        n_classes = 0
    xtr, xte, ytr, yte = x[train], x[test], y[train], y[test]
    if standardize:
        mean, std = xtr.mean(axis=0), xtr.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
        if task == REGRESSION:
            ym, ys = ytr.mean(), ytr.std()
            ys = ys if ys > 0 else 1.0
            ytr, yte = (ytr - ym) / ys, (yte - ym) / ys
    ydt = np.int64 if task == CLASSIFICATION else float
    arrays = (_readonly(xtr, float), _readonly(ytr, ydt), _readonly(xte, float),
              _readonly(yte, ydt))
    return Dataset(name, task, *arrays, n_classes=n_classes,
                   digest=digest(*arrays), params=dict(params))


def _common(standardize, test_fraction, seed):
    standardize = _bool_arg("standardize", standardize)
    test_fraction = _real_arg("test_fraction", test_fraction, lambda v: 0 <= v < 1,
                              "a number in [0, 1)")
    seed = _int_arg("seed", seed, 0)
    return standardize, test_fraction, seed


# ---------------------------------------------------------------------------------------------
# Synthetic sets: pure numpy, seeded by the data set's own seed.

def linear(n_samples: int = 200, n_features: int = 10, noise: float = 0.1,
           standardize: bool = True, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """y = x·w + noise·ε with x, w, ε standard normal (w drawn once from the seed)."""
    n_samples = _int_arg("n_samples", n_samples, 2)
    n_features = _int_arg("n_features", n_features, 1)
    noise = _real_arg("noise", noise, lambda v: v >= 0, "a number >= 0")
    standardize, test_fraction, seed = _common(standardize, test_fraction, seed)
    rng = np.random.default_rng([seed, 1])
    w = rng.standard_normal(n_features)
    x = rng.standard_normal((n_samples, n_features))
    y = x @ w + noise * rng.standard_normal(n_samples)
    return prepare("linear", REGRESSION, x, y, standardize=standardize,
                   test_fraction=test_fraction, seed=seed,
                   params=dict(n_samples=n_samples, n_features=n_features, noise=noise))


def moons(n_samples: int = 200, noise: float = 0.1, standardize: bool = True,
          test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Two interleaving half circles (the shape of scikit-learn's ``make_moons``), labels 0/1,
    plus isotropic Gaussian noise of standard deviation ``noise``."""
    n_samples = _int_arg("n_samples", n_samples, 4)
    noise = _real_arg("noise", noise, lambda v: v >= 0, "a number >= 0")
    standardize, test_fraction, seed = _common(standardize, test_fraction, seed)
    rng = np.random.default_rng([seed, 2])
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    x = np.concatenate([np.stack([np.cos(t_out), np.sin(t_out)], 1),
                        np.stack([1 - np.cos(t_in), 0.5 - np.sin(t_in)], 1)])
    y = np.concatenate([np.zeros(n_out, int), np.ones(n_in, int)])
    x = x + noise * rng.standard_normal(x.shape)
    return prepare("moons", CLASSIFICATION, x, y, standardize=standardize,
                   test_fraction=test_fraction, seed=seed,
                   params=dict(n_samples=n_samples, noise=noise))


def chebyshev(n_samples: int = 20, degree: int = 4, noise: float = 0.0,
              standardize: bool = False, test_fraction: float = 0.0, seed: int = 0) -> Dataset:
    """The 1-D toy regression set: ``n_samples`` inputs evenly spaced on [−1, 1], target the
    Chebyshev polynomial T_degree(x) = cos(degree·arccos x), plus noise·ε."""
    n_samples = _int_arg("n_samples", n_samples, 2)
    degree = _int_arg("degree", degree, 0)
    noise = _real_arg("noise", noise, lambda v: v >= 0, "a number >= 0")
    standardize, test_fraction, seed = _common(standardize, test_fraction, seed)
    x = np.linspace(-1.0, 1.0, n_samples)
    y = np.polynomial.chebyshev.chebval(x, [0] * degree + [1])
    if noise:
        y = y + noise * np.random.default_rng([seed, 3]).standard_normal(n_samples)
    return prepare("chebyshev", REGRESSION, x, y, standardize=standardize,
                   test_fraction=test_fraction, seed=seed,
                   params=dict(n_samples=n_samples, degree=degree, noise=noise))


# ---------------------------------------------------------------------------------------------
# scikit-learn's bundled sets: files inside the installed package, nothing downloaded. The
# import happens here, when such a set is loaded, so the descent loop never pulls it in.

def _bundled(loader: str, task: str):
    def load(standardize: bool = True, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
        standardize, test_fraction, seed = _common(standardize, test_fraction, seed)
        import sklearn.datasets

        bunch = getattr(sklearn.datasets, f"load_{loader}")()
        return prepare(loader, task, bunch.data, bunch.target, standardize=standardize,
                       test_fraction=test_fraction, seed=seed, params={})

    load.__name__ = loader
    load.__doc__ = f"scikit-learn's bundled ``{loader}`` set ({task})."
    return load


diabetes = _bundled("diabetes", REGRESSION)
breast_cancer = _bundled("breast_cancer", CLASSIFICATION)
iris = _bundled("iris", CLASSIFICATION)
digits = _bundled("digits", CLASSIFICATION)
wine = _bundled("wine", CLASSIFICATION)

DATASETS: dict[str, Callable[..., Dataset]] = {
    "linear": linear,
    "moons": moons,
    "chebyshev": chebyshev,
    "diabetes": diabetes,
    "breast_cancer": breast_cancer,
    "iris": iris,
    "digits": digits,
    "wine": wine,
}

# What each set is for, known without loading it (config checks objective against data).
TASKS = {"linear": REGRESSION, "moons": CLASSIFICATION, "chebyshev": REGRESSION,
         "diabetes": REGRESSION, "breast_cancer": CLASSIFICATION, "iris": CLASSIFICATION,
         "digits": CLASSIFICATION, "wine": CLASSIFICATION}


def load(name: str, **params) -> Dataset:
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name](**params)


def dataset_or_default(data: Optional[Dataset], default: str) -> Dataset:
    if data is None:
        return DATASETS[default]()
    if not isinstance(data, Dataset):
        raise ValueError(f"data must be a Dataset, got {type(data).__name__}")
    return data

"""Shared fixtures: a private outputs folder per test and a way to run the real CLI."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gdexp.config import CONF_DIR, register_resolvers


@pytest.fixture
def outputs(tmp_path, monkeypatch) -> Path:
    """GDEXP_OUTPUTS pointed at a fresh folder, for this process and its children."""
    out = tmp_path / "outputs"
    monkeypatch.setenv("GDEXP_OUTPUTS", str(out))
    return out


def run_cli(*args: str, outputs: Path, timeout: float = 300, check: bool = False,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m gdexp ARGS` in a subprocess writing into ``outputs``."""
    full_env = {**os.environ, "GDEXP_OUTPUTS": str(outputs), **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "gdexp", *args], capture_output=True,
                          text=True, timeout=timeout, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"gdexp {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout}\n{proc.stderr}")
    return proc


def compose_config(*overrides: str):
    """Compose conf/ with Hydra's compose API, as `gdexp run` would (without the hydra key)."""
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def store_uri(outputs: Path) -> str:
    return f"sqlite:///{outputs / 'mlflow.db'}"

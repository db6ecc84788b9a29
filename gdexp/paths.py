"""Where gdexp's files live: the project root, conf/, experiments/ and the outputs folder."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"
EXPERIMENTS_DIR = ROOT / "experiments"


def outputs_dir() -> Path:
    """Where every run writes: ``$GDEXP_OUTPUTS`` if set, else ``<project root>/outputs``."""
    return Path(os.environ.get("GDEXP_OUTPUTS") or ROOT / "outputs").resolve()

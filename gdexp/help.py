"""`gdexp run --help` without Hydra: the text Hydra would print, rendered from conf/ directly.

Hydra's own help deep-copies its config store twice per config group, its own groups
included: ~1.5 s of CPU, ~5x `import hydra`. Rendering the same text from the YAML files
takes a few milliseconds; a test checks that both texts are the same.
"""
from __future__ import annotations

import string
from pathlib import Path
from typing import Optional


def quick_help() -> Optional[str]:
    """Hydra's `--help` text for the default config, or None when the config uses something
    this rendering does not reproduce (Hydra then prints the help itself)."""
    import importlib.util

    from omegaconf import OmegaConf

    from .paths import CONF_DIR, EXPERIMENTS_DIR

    def load(path: Path):
        return OmegaConf.to_container(OmegaConf.load(path))  # YAML as Hydra reads it

    primary = load(CONF_DIR / "config.yaml") or {}
    help_cfg = (primary.get("hydra") or {}).get("help") or {}
    hydra_dir = Path(importlib.util.find_spec("hydra").submodule_search_locations[0])
    hydra_help = load(hydra_dir / "conf" / "hydra" / "help" / "default.yaml")
    template = help_cfg.get("template", hydra_help["template"])
    text = (template.replace("${hydra.help.header}", help_cfg.get("header", "${?}"))
            .replace("${hydra.help.footer}", help_cfg.get("footer", "${?}")))
    if "${" in text or "$FLAGS_HELP" in text or "$HYDRA_CONFIG_GROUPS" in text:
        return None

    defaults = primary.get("defaults") or []
    if "_self_" not in defaults:
        return None
    config: dict = {}
    for entry in defaults:
        if entry == "_self_":
            _merge(config, {k: v for k, v in primary.items() if k not in ("defaults", "hydra")})
            continue
        if not (isinstance(entry, dict) and len(entry) == 1):
            return None
        (group, option), = entry.items()
        if option is None or group.startswith("override hydra/"):
            continue  # Hydra's own groups (the launcher) are not part of the app's config
        if not isinstance(option, str) or not group.isidentifier():
            return None  # override/optional keywords, packages, nested groups: Hydra's job
        path = CONF_DIR / group / f"{option}.yaml"
        source, node = path.read_text(), load(path) or {}
        if "@package" in source or not isinstance(node, dict) or "defaults" in node:
            return None
        _merge(config, {group: node})

    groups = {}
    for path in sorted(CONF_DIR.rglob("*.yaml")):
        group = path.parent.relative_to(CONF_DIR).as_posix()
        if group != "." and group != "hydra" and not group.startswith("hydra/"):
            groups.setdefault(group, []).append(path.stem)
    experiments = [p.stem for p in EXPERIMENTS_DIR.glob("*.yaml")]
    if experiments:
        groups["experiment"] = experiments
    listing = "".join(f"{g}: {', '.join(sorted(groups[g]))}\n" for g in sorted(groups))
    dump = OmegaConf.to_yaml(OmegaConf.create(config))
    return string.Template(text).substitute(APP_CONFIG_GROUPS=listing, CONFIG=dump)


def _merge(into: dict, update: dict) -> None:
    """Merge as OmegaConf does: mappings key by key, anything else replaced."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value

"""The presets of experiments/ as Hydra's config group `experiment` (`gdexp run experiment=NAME`):
a config source serves the folder's files from disk, and a search path plugin puts it on every
search path gdexp composes with (the command line's and the compose API's). Found by Hydra's
plugin discovery, like the launcher."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "experiment"
SCHEME = "gdexp-presets"


class PresetsConfigSource(ConfigSource):
    """``<path>/NAME.yaml`` as the config ``experiment/NAME``; nothing else."""

    @staticmethod
    def scheme() -> str:
        return SCHEME

    def _file(self, config_path: str) -> Optional[Path]:
        group, _, name = config_path.partition("/")
        if group != GROUP or not name or "/" in name:
            return None
        return Path(self.path) / self._normalize_file_name(name)

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None or not path.is_file():
            raise ConfigLoadError(f"Config not found : {config_path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(config=OmegaConf.create(text), path=self.full_path(),
                            provider=self.provider,
                            header=ConfigSource._get_header_dict(text[:512]))

    def available(self) -> bool:
        return Path(self.path).is_dir()

    def is_group(self, config_path: str) -> bool:
        return config_path in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        path = self._file(config_path)
        return path is not None and path.is_file()

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        if config_path == "":
            return [GROUP] if results_filter in (None, ObjectType.GROUP) else []
        if config_path != GROUP or results_filter == ObjectType.GROUP:
            return []
        return sorted(p.stem for p in Path(self.path).glob("*.yaml"))


class PresetsSearchPath(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from gdexp.paths import EXPERIMENTS_DIR

        search_path.append(provider="gdexp", path=f"{SCHEME}://{EXPERIMENTS_DIR}")

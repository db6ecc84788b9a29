"""Block YAML of plain data, written directly: the text ``yaml.dump(data, Dumper=dumper,
default_flow_style=False, allow_unicode=True, sort_keys=False)`` gives, byte for byte.

A sweep writes five YAML files per job (its `.hydra` folder and its config artifacts). PyYAML
builds a node graph in Python for each, even when libyaml emits it: ≈ 2 ms a file, a tenth of
a batched job's whole cost. Here mappings, sequences, numbers, booleans, null and the strings
that PyYAML writes as they are (plain, on one line) are written straight away. Every other
string, key or shape (quoting, escapes, long text that wraps, non-ASCII, nested sequences) is
left to PyYAML itself, inside a stand-in document that puts it at the same indentation, and
remembered: the same help texts recur in every job of a sweep.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Any, Callable

import yaml

# What PyYAML writes unquoted when nothing else forbids it (its analyze_scalar, conservatively):
# printable ASCII, not starting with an indicator, no ": " / " #", no trailing ":" or space.
_PLAIN = re.compile(r"[^\-?:,\[\]{}#&*!|>'\"%@`\s][\x20-\x7e]*")
_FORBIDDEN = (": ", " #", "  ")
# A plain scalar with a space may wrap once its line passes 80 columns (PyYAML's best_width).
_WRAP_MARGIN = 76
# PyYAML writes a mapping key longer than 128 characters as a complex key ("? key").
_LONG_KEY = 100
_STR = "tag:yaml.org,2002:str"


class _Fallback(Exception):
    """A shape written by PyYAML as a whole."""


class Writer:
    """``dump(data)``: the YAML text of plain data (dict, list, str, int, float, bool, None).
    ``dumper``: the PyYAML Dumper whose text this reproduces; ``quoted(s)``: whether its
    string representer quotes s (OmegaConf quotes strings that read back as numbers or
    booleans)."""

    def __init__(self, dumper: type, quoted: Callable[[str], bool]):
        self.dumper, self.quoted = dumper, quoted
        self.resolver = yaml.resolver.Resolver()
        self.plain = functools.lru_cache(maxsize=16384)(self._plain)
        self.entry = functools.lru_cache(maxsize=4096)(self._entry)
        self.item = functools.lru_cache(maxsize=4096)(self._item)

    def pyyaml(self, data: Any) -> str:
        return yaml.dump(data, Dumper=self.dumper, default_flow_style=False,
                         allow_unicode=True, sort_keys=False)

    def dump(self, data: Any) -> str:
        if isinstance(data, (dict, list)) and data:
            out: list[str] = []
            try:
                (self._mapping if isinstance(data, dict) else self._sequence)(data, 0, out,
                                                                              set())
                return "".join(out)
            except _Fallback:
                pass
        return self.pyyaml(data)

    def _plain(self, s: str) -> bool:
        """Whether PyYAML writes s as it is."""
        return (_PLAIN.fullmatch(s) is not None and not s.endswith((":", " "))
                and not any(f in s for f in _FORBIDDEN) and not s.startswith(("---", "..."))
                and not self.quoted(s)
                and self.resolver.resolve(yaml.ScalarNode, s, (True, False)) == _STR)

    def _scalar(self, value: Any) -> Any:
        """The scalar's text when it is written as it is, else None."""
        if value is None:
            return "null"
        if value is True:
            return "true"
        if value is False:
            return "false"
        if type(value) is int:
            return str(value)
        if type(value) is float:
            if math.isnan(value):
                return ".nan"
            if math.isinf(value):
                return ".inf" if value > 0 else "-.inf"
            text = repr(value).lower()
            return text.replace("e", ".0e", 1) if "." not in text and "e" in text else text
        if type(value) is str:
            return value if self.plain(value) else None
        if isinstance(value, (dict, list)) and not value:
            return "{}" if isinstance(value, dict) else "[]"
        raise _Fallback

    @staticmethod
    def _enter(data, seen: set) -> None:
        """A container met twice is an anchor and its aliases (``&id001``, ``*id001``)."""
        if id(data) in seen:
            raise _Fallback
        seen.add(id(data))

    def _mapping(self, data: dict, indent: int, out: list, seen: set,
                 first: str = "") -> None:
        """Entries at ``indent``; ``first`` replaces the first entry's indentation (the
        "- " of a sequence item)."""
        self._enter(data, seen)
        pad = " " * indent
        for key, value in data.items():
            lead, first = first or pad, ""
            if type(key) is not str or len(key) > _LONG_KEY or not self.plain(key):
                out.append(lead + self._probe_entry(indent, key, value))
                continue
            if isinstance(value, dict) and value:
                out.append(f"{lead}{key}:\n")
                self._mapping(value, indent + 2, out, seen)
                continue
            if isinstance(value, list) and value:
                out.append(f"{lead}{key}:\n")
                self._sequence(value, indent, out, seen)
                continue
            text = self._scalar(value)
            if text is None or (" " in text
                                and indent + len(key) + 2 + len(text) > _WRAP_MARGIN):
                out.append(lead + self._probe_entry(indent, key, value))
            else:
                out.append(f"{lead}{key}: {text}\n")

    def _sequence(self, data: list, indent: int, out: list, seen: set) -> None:
        """Items of a sequence whose "- " is at ``indent`` (a mapping's sequence value is
        not indented further)."""
        self._enter(data, seen)
        pad = " " * indent
        for value in data:
            if isinstance(value, dict) and value:
                self._mapping(value, indent + 2, out, seen, first=pad + "- ")
                continue
            if isinstance(value, list) and value:
                raise _Fallback
            text = self._scalar(value)
            if text is None or (" " in text and indent + 2 + len(text) > _WRAP_MARGIN):
                out.append(self._probe_item(indent, value))
            else:
                out.append(f"{pad}- {text}\n")

    def _probe_entry(self, indent: int, key: Any, value: Any) -> str:
        """One mapping entry as PyYAML writes it at ``indent``, without its indentation on
        the first line."""
        if not isinstance(value, str) or not isinstance(key, str):
            return self._entry_text(indent, key, value)
        return self.entry(indent, key, value)

    def _probe_item(self, indent: int, value: Any) -> str:
        if not isinstance(value, str):
            return self._item_text(indent, value)
        return self.item(indent, value)

    def _entry(self, indent: int, key: str, value: str) -> str:
        return self._entry_text(indent, key, value)

    def _item(self, indent: int, value: str) -> str:
        return self._item_text(indent, value)

    def _entry_text(self, indent: int, key: Any, value: Any) -> str:
        depth = indent // 2
        probe: Any = {key: value}
        for _ in range(depth):
            probe = {"k": probe}
        lines = self.pyyaml(probe).split("\n")[depth:]
        return "\n".join(lines)[indent:]

    def _item_text(self, indent: int, value: Any) -> str:
        depth = indent // 2
        probe: Any = {"k": [value]}
        for _ in range(depth):
            probe = {"k": probe}
        return "\n".join(self.pyyaml(probe).split("\n")[depth + 1:])

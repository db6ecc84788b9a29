"""The direct YAML writer gives PyYAML's text byte for byte: on the configs and Hydra configs
of every preset, on OmegaConf's tricky strings, and on random nested data."""
from __future__ import annotations

import random
import string

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from gdexp import config
from gdexp.config import CONF_DIR, EXPERIMENTS_DIR, register_resolvers

PRESETS = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml"))


@pytest.fixture(scope="module")
def writer():
    w = config._yaml_writer()
    if w is None:
        pytest.skip("PyYAML without libyaml: to_yaml is OmegaConf.to_yaml itself")
    return w


def _same(writer, data) -> None:
    assert writer.dump(data) == writer.pyyaml(data), data


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_configs_and_their_hydra_configs(writer, preset):
    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    hydra = {"hydra": OmegaConf.to_container(cfg.hydra, enum_to_str=True)}
    with open_dict(cfg):
        del cfg["hydra"]
    for data in (OmegaConf.to_container(cfg, enum_to_str=True),
                 OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), hydra,
                 list(hydra["hydra"]["overrides"]["task"])):
        _same(writer, data)
    # the help texts (long, quoted, multi-line) went through PyYAML, the rest did not
    assert writer.entry.cache_info().currsize > 0


def test_strings_that_need_quotes_or_wrap(writer):
    words = ["1", "1.5", "1e3", "-2", ".inf", "nan", "0x1F", "1_000", "1:20", "2026-12-04",
             "true", "False", "yes", "off", "null", "~", "", " padded", "padded ", "a: b",
             "x #c", "#x", "-x", "- x", "---x", "...", "=", "a:", "it's", 'say "hi"',
             "tab\there", "line\nbreak", "λmax ≤ 2/η", "${stop.max_steps}", "${now:%H-%M}",
             "word " * 30, "w" * 200, "two  spaces", "[a]", "{b}", "a,b", "?q", "%d", "@x"]
    data = {"top": words, "nested": {w: w for w in words if w}, "items": [{"k": w} for w in words],
            "deep": {"a": {"b": {"c": {"d": words}}}}}
    _same(writer, data)
    for w in words:
        _same(writer, {"k": w})
        _same(writer, [w])


def test_numbers_and_shapes(writer):
    data = {"floats": [0.0, -0.0, 1e17, 1e-300, 0.000127, 1.5, float("nan"), float("inf"),
                       -float("inf"), 123456789.123],
            "ints": [0, -3, 10 ** 20], "flags": [True, False, None],
            "empty": {"list": [], "map": {}}, "lists": [[], {}, [1, [2]], {"a": [{"b": {}}]}],
            "long_key_" + "k" * 150: 1, 3: "int key"}
    _same(writer, data)
    for top in ([1, 2], {}, [], "text", 1.5, None):
        _same(writer, top)


def test_random_nested_data(writer):
    rng = random.Random(20261204)
    alphabet = string.ascii_letters[:8] + string.digits[:4] + " :#-?,[]{}&*!|>'\"%@`.~=\t\n\\/$_λ"

    def text():
        if rng.random() < 0.3:
            return rng.choice(["true", "no", "1e3", "~", "null", "a: b", "x #c", "-1", "word " * 20])
        return "".join(rng.choice(alphabet) for _ in range(rng.choice([0, 1, 3, 8, 30, 90])))

    def value(depth):
        r = rng.random()
        if depth < 4 and r < 0.25:
            return {(text() if rng.random() < 0.3 else f"k{i}"): value(depth + 1)
                    for i in range(rng.randint(0, 4))}
        if depth < 4 and r < 0.4:
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return rng.choice([None, True, rng.randint(-10 ** 6, 10 ** 6),
                           rng.random() * 10.0 ** rng.randint(-300, 300), text(), text()])

    for _ in range(3000):
        _same(writer, value(0))


def test_to_yaml_reads_back_as_omegaconf_writes_it():
    node = OmegaConf.create({"a": {"b": "${a.c}", "c": 1, "help": "line one\nline two\n"},
                             "quoted": ["1", "true", "null"], "lr": 1e-05})
    ours = config.to_yaml(node)
    assert OmegaConf.to_container(OmegaConf.create(ours)) == \
        OmegaConf.to_container(OmegaConf.create(OmegaConf.to_yaml(node)))


def test_plain_data_is_written_without_pyyaml(writer, monkeypatch):
    data = {"objective": {"name": "rosenbrock", "a": 1.0}, "lr": 0.000127, "seeds": [0, 1],
            "runs": [{"dir": "${gdexp_outputs:}/runs/x", "ok": True}], "none": None}
    expected = writer.pyyaml(data)

    def refuse(_data):
        raise AssertionError("PyYAML was asked")

    monkeypatch.setattr(writer, "pyyaml", refuse)
    assert writer.dump(data) == expected

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from fmriface.config import CONFIG_DIR, ConfigError, config_hash, load_config, resolve_config


@dataclasses.dataclass(frozen=True)
class Inner:
    max_mm: float = 2.0


@dataclasses.dataclass(frozen=True)
class Cfg:
    n: int = 3
    name: str = "x"
    grid: tuple[int, int, int] = (64, 64, 36)
    noise: float | None = None
    inner: Inner = Inner()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n}")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_file_and_overrides_in_priority_order(tmp_path):
    p = write(tmp_path, 'n = 5\nname = "file"\ngrid = [8, 9, 7]\n[inner]\nmax_mm = 3\n')
    cfg = load_config(Cfg, p, {"name": "cli", "noise": None, "inner.max_mm": 1.5})
    assert cfg == Cfg(n=5, name="cli", grid=(8, 9, 7), noise=None, inner=Inner(1.5))
    assert isinstance(cfg.inner.max_mm, float)


def test_unknown_key_names_key_and_file(tmp_path):
    p = write(tmp_path, "n = 5\nbogus = 1\n")
    with pytest.raises(ConfigError, match=r"c\.toml.*'bogus'"):
        load_config(Cfg, p)


def test_unknown_nested_key(tmp_path):
    p = write(tmp_path, "[inner]\nmax = 1\n")
    with pytest.raises(ConfigError, match=r"'inner\.max'"):
        load_config(Cfg, p)


@pytest.mark.parametrize(
    "text, key",
    [('n = "five"', "n"), ("n = 1.5", "n"), ("n = true", "n"), ("grid = [1, 2]", "grid"), ("name = 3", "name")],
)
def test_wrong_type_names_key_and_file(tmp_path, text, key):
    p = write(tmp_path, text + "\n")
    with pytest.raises(ConfigError, match=rf"c\.toml.*{key}"):
        load_config(Cfg, p)


def test_invalid_value_from_post_init_names_file(tmp_path):
    p = write(tmp_path, "n = 0\n")
    with pytest.raises(ConfigError, match=r"c\.toml: n must be at least 1"):
        load_config(Cfg, p)


def test_bad_toml_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(Cfg, write(tmp_path, "n = = 1"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.toml")


def test_config_hash_is_stable_and_sensitive():
    assert config_hash(Cfg()) == config_hash(Cfg())
    assert config_hash(Cfg()) != config_hash(Cfg(n=4))


def test_resolve_config_takes_files_presets_and_short_preset_names(tmp_path):
    own = tmp_path / "mine.toml"
    assert resolve_config(own) == own  # a path is taken as given; load_config reports it missing
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, resolve_config(own))
    assert resolve_config(None) is None
    assert resolve_config("fit-demo", "fit") == CONFIG_DIR / "fit-demo.toml"
    assert resolve_config("demo", "display") == CONFIG_DIR / "display-demo.toml"
    assert resolve_config("paper", "experiment") == CONFIG_DIR / "experiment-paper.toml"
    with pytest.raises(ConfigError, match="no preset named 'serve-nothing'"):
        resolve_config("nothing", "serve")


def test_a_step_preset_is_a_shipped_name_or_a_toml_path(tmp_path):
    from fmriface.config import preset_or_file, preset_path

    assert preset_or_file("fit-demo") == preset_path("fit-demo")
    variant = tmp_path / "fit-cubic.toml"
    variant.write_text('[preprocess]\ninterpolation = "cubic"\n')
    assert preset_or_file(str(variant)) == variant
    with pytest.raises(ConfigError, match="preset file .*missing.toml does not exist"):
        preset_or_file(str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="no preset named 'fit-nope'"):
        preset_or_file("fit-nope")

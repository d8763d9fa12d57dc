"""Typed configs: dataclasses loaded from YAML with dotted command-line overrides.

OmegaConf does the parsing and merging (unknown keys and wrong types are caught by
its structured mode); this module turns its multi-line errors into one line that
names the key and the valid choices, and adds cross-field checks (``check``) that
run before any work starts.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf._utils import get_omega_conf_dumper
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from pipeline.core.errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass
class Config:
    """Base for every config: YAML + dotlist in, validated dataclass out."""

    @classmethod
    def load(
        cls: type[C],
        path: str | Path | None = None,
        overrides: Sequence[str] = (),
        values: Mapping[str, Any] | None = None,
    ) -> C:
        """Defaults <- YAML file <- ``values`` (typed, from CLI flags) <- ``key.sub=value`` overrides.

        The result is validated (``validate()``) before it is returned.
        """
        merged = OmegaConf.structured(cls)
        try:
            if path is not None:
                path = Path(path)
                if not path.is_file():
                    raise ConfigError(f"config file not found: {path}")
                merged = OmegaConf.merge(merged, OmegaConf.load(path))
            for key, value in (values or {}).items():
                if value is not None:
                    merged = OmegaConf.merge(merged, _nest(key, value))
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override {item!r} is not of the form key.sub=value")
                merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
            config = OmegaConf.to_object(merged)
        except OmegaConfBaseException as exc:
            raise ConfigError(_one_line(cls, exc)) from None
        assert isinstance(config, cls)
        config.validate()
        return config

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuild a config saved with ``to_dict`` (e.g. from a checkpoint)."""
        try:
            config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), data))
        except OmegaConfBaseException as exc:
            raise ConfigError(_one_line(cls, exc)) from None
        assert isinstance(config, cls)
        config.validate()
        return config

    def validate(self, prefix: str = "") -> None:
        """Check this node, then every nested config; raise ConfigError on the first problem."""
        self.check(prefix)
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, Config):
                value.validate(f"{prefix}{field.name}.")
            elif isinstance(value, dict):  # a named collection of configs, e.g. data.sources.<name>
                for name, item in value.items():
                    if isinstance(item, Config):
                        item.validate(f"{prefix}{field.name}.{name}.")

    def check(self, prefix: str) -> None:
        """Cross-field rules of one config node; override in subclasses."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        """What ``OmegaConf.to_yaml`` writes (its dumper quotes strings that would load as another type),
        without building an OmegaConf tree first: that took 0.05-0.15 CPU-s for a prep config, paid by
        every run (a tenth of a small prep)."""
        return yaml.dump(
            self.to_dict(),
            Dumper=get_omega_conf_dumper(),
            default_flow_style=False,
            allow_unicode=True,
            sort_keys=False,
        )

    def save(self, path: str | Path) -> Path:
        """Write the resolved config as YAML (the copy kept next to every output)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml())
        return path

    def flat(self) -> dict[str, str]:
        """``{"train.lr": "0.001", ...}``: the shape MLflow params want."""
        out: dict[str, str] = {}

        def walk(node: Any, prefix: str) -> None:
            if isinstance(node, dict):
                for key, value in node.items():
                    walk(value, f"{prefix}{key}.")
            else:
                out[prefix[:-1]] = json.dumps(node) if isinstance(node, list) else str(node)

        walk(self.to_dict(), "")
        return out


def require(condition: bool, key: str, message: str) -> None:
    """Raise a one-line ConfigError about ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"config error: {key}: {message}")


def require_choice(value: Any, key: str, choices: Iterable[Any]) -> None:
    choices = list(choices)
    require(value in choices, key, f"got {value!r}; valid choices: {', '.join(map(str, choices))}")


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    """``("a.b", 1)`` -> ``{"a": {"b": 1}}``."""
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _one_line(cls: type, exc: OmegaConfBaseException) -> str:
    """OmegaConf's errors span several lines; keep the key, the reason and the choices."""
    key = getattr(exc, "full_key", None) or "?"
    if isinstance(exc, ConfigKeyError):
        parent_key, _, _ = key.rpartition(".")
        valid = _field_names(cls, parent_key)
        where = f" under '{parent_key}'" if parent_key else ""
        return f"config error: unknown key '{key}'; valid keys{where}: {', '.join(valid)}"
    reason = str(exc).splitlines()[0]
    return f"config error: {key}: {reason}"


def _field_names(cls: type, dotted: str) -> list[str]:
    """Field names of the config node at ``dotted``, read off the dataclass types (so the
    value type of a ``dict[str, SomeConfig]`` field is found for any key)."""
    node: Any = cls
    for part in filter(None, dotted.split(".")):
        if typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
            continue
        hints = typing.get_type_hints(node) if dataclasses.is_dataclass(node) else {}
        node = hints.get(part)
    return [f.name for f in dataclasses.fields(node)] if dataclasses.is_dataclass(node) else []

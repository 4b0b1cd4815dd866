"""YAML configuration: strict models, ``--set key=value`` overrides, resolved copies on disk.

Every command's options live in a pydantic model derived from :class:`Config`. Unknown keys and
ill-typed values are errors that name the offending key, so a typo never silently falls back to a
default.

Examples
--------
>>> from morphospace.config import Config
>>> class Example(Config):
...     seed: int = 0
...     size: int = 64
>>> cfg = resolve_config(Example, {"size": 32}, ["seed=3"])
>>> cfg.seed, cfg.size
(3, 32)
>>> resolve_config(Example, {"sise": 32})
Traceback (most recent call last):
...
morphospace.config.ConfigError: config: invalid configuration
  key 'sise': unknown key
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Iterator, Literal, Mapping, Sequence, TypeVar

import pydantic
import yaml

from morphospace.atomic import write_text_atomic
from morphospace.errors import MorphospaceError

__all__ = [
    "Config",
    "ConfigError",
    "key_error",
    "apply_overrides",
    "load_config",
    "read_config_file",
    "builtin_configs",
    "find_config",
    "builtin_config_summary",
    "copy_builtin_config",
    "resolve_config",
    "save_config",
    "PATH",
    "CountOrAuto",
    "path_fields",
    "resolve_paths",
]

ConfigT = TypeVar("ConfigT", bound="Config")


class ConfigError(MorphospaceError, ValueError):
    """A configuration file or override is invalid; the message names the key (``key`` and
    ``problem`` hold them apart when the error is about one key)."""

    def __init__(self, message: str, key: str | None = None, problem: str | None = None) -> None:
        super().__init__(message)
        self.key, self.problem = key, problem


def key_error(key: str, problem: str) -> ConfigError:
    """A :class:`ConfigError` about one dotted key, for rules checked after the schema (against the
    data, or between sections).

    >>> str(key_error("data.crop_size", "66 is not a multiple of 4; use 64 or 68"))
    "key 'data.crop_size': 66 is not a multiple of 4; use 64 or 68"
    """
    return ConfigError(f"key '{key}': {problem}", key, problem)


class Config(pydantic.BaseModel):
    """Base of every configuration model: unknown keys are rejected, values are validated.

    ``source`` names where the values came from (a YAML file, ``defaults``), for error messages.
    """

    model_config = pydantic.ConfigDict(extra="forbid", validate_assignment=True, frozen=False)
    _source: str = pydantic.PrivateAttr("config")

    @property
    def source(self) -> str:
        return self._source

    def __eq__(self, other: object) -> bool:
        """Configs are equal when their type and values are, wherever they were read from."""
        return type(self) is type(other) and self.__dict__ == other.__dict__

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python view (lists, dicts, numbers, strings) suitable for YAML or JSON."""
        return self.model_dump(mode="json")


def _format_validation_error(error: pydantic.ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  key '{key}': unknown key")
        else:
            lines.append(f"  key '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied.

    Values are parsed as YAML scalars or lists (``3`` -> int, ``true`` -> bool, ``[1, 2]`` -> list,
    ``null`` -> None). Intermediate mappings are created as needed; whether the key exists is
    checked later by the model.
    """
    result = _deep_copy(data)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r}: expected key=value")
        key, raw_value = override.split("=", 1)
        parts = [part for part in key.strip().split(".") if part]
        if not parts:
            raise ConfigError(f"override {override!r}: empty key")
        try:
            value = yaml.safe_load(raw_value) if raw_value.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {override!r}: value is not valid YAML ({exc})") from exc
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {override!r}: key '{prefix}' is not a section")
            node = child
        node[parts[-1]] = value
    return result


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def resolve_config(
    model: type[ConfigT],
    data: Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    source: str = "config",
) -> ConfigT:
    """Validate ``data`` (plus overrides) against ``model``; raise :class:`ConfigError` on problems."""
    merged = apply_overrides(data or {}, overrides)
    try:
        config = model.model_validate(merged)
    except pydantic.ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, source)) from None
    config._source = source
    return config


def builtin_configs() -> dict[str, Path]:
    """The example configs shipped with the package, by name (``vae_simulated`` -> its YAML file)."""
    folder = Path(str(resources.files("morphospace") / "configs"))
    return {path.stem: path for path in sorted(folder.glob("*.yaml"))}


def find_config(name_or_path: str | os.PathLike) -> Path:
    """A config file: the path itself when it exists, else the built-in config of that name.

    ``vae_simulated`` and ``vae_simulated.yaml`` both name the shipped example, so commands work
    from any folder; a file of that name in the working folder wins. Raises :class:`ConfigError`
    listing the built-in names when neither exists.
    """
    path = Path(name_or_path)
    if path.exists() or path.parent != Path("."):
        return path
    builtin = builtin_configs()
    stem = path.stem if path.suffix in (".yaml", ".yml") else path.name
    if stem in builtin:
        return builtin[stem]
    raise ConfigError(f"{path}: no such file, and no built-in config of that name "
                      f"(built-in: {', '.join(builtin)}; `morphospace config NAME --out FILE` copies one)")


def builtin_config_summary() -> str:
    """One line per built-in config: its name and the first line of its leading comment."""
    lines = []
    for name, path in builtin_configs().items():
        comment = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")),
                       "")
        lines.append(f"{name:<28} {comment}")
    return "\n".join(lines)


def copy_builtin_config(name: str, out: str | os.PathLike | None = None, overwrite: bool = False) -> str:
    """The YAML text of the built-in config ``name``; also written to ``out`` when given.

    Raises :class:`ConfigError` for an unknown name and FileExistsError when ``out`` exists and
    ``overwrite`` is False.
    """
    builtin = builtin_configs()
    if name.removesuffix(".yaml") not in builtin:
        raise ConfigError(f"{name}: no built-in config of that name (built-in: {', '.join(builtin)})")
    text = builtin[name.removesuffix(".yaml")].read_text()
    if out is not None:
        out = Path(out)
        if out.exists() and not overwrite:
            raise FileExistsError(f"{out} exists; pass --overwrite to replace it")
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text)
    return text


def read_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """The mapping of a YAML config file (or a built-in config's name, see :func:`find_config`).

    Raises :class:`ConfigError` naming the file when it is unreadable, malformed YAML, or not a
    mapping at the top level (an empty file is an empty mapping).
    """
    path = find_config(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def load_config(
    model: type[ConfigT], path: str | os.PathLike | None = None, overrides: Sequence[str] = ()
) -> ConfigT:
    """Read a YAML file (or only defaults when ``path`` is None) into ``model``.

    Raises :class:`ConfigError` naming the file and key when the YAML is malformed, is not a
    mapping, holds an unknown key or a value of the wrong type.
    """
    if path is None:
        return resolve_config(model, {}, overrides, source="defaults")
    return resolve_config(model, read_config_file(path), overrides, source=str(path))


def save_config(config: Config, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML, atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config.to_dict(), sort_keys=False)
    write_text_atomic(path, text)
    return path


class _PathField:
    """Annotation marker of config fields holding a file or folder path."""

    def __repr__(self) -> str:
        return "PATH"


PATH = _PathField()
"""Marks a config field as a path, e.g. ``store: Annotated[str, PATH]``: :func:`resolve_paths`
makes it absolute, so that a saved config means the same files from any working folder."""


def _count_or_auto(value: int | str) -> int | str:
    if isinstance(value, int) and value < 1:
        raise ValueError(f"must be at least 1 or auto, got {value}")
    return value


CountOrAuto = Annotated[int | Literal["auto"], pydantic.AfterValidator(_count_or_auto)]
"""A config field that is a positive count or ``auto`` (chosen by the command from the data)."""


def _path_slots(config: Config, prefix: str = "") -> Iterator[tuple[Config, str, str]]:
    """(section, field name, dotted key) of every set path field of ``config`` and its sections."""
    for name, info in type(config).model_fields.items():
        value, key = getattr(config, name), prefix + name
        if any(marker is PATH for marker in info.metadata) and isinstance(value, str) and value:
            yield config, name, key
        if isinstance(value, dict):
            items = [(f"{key}.{k}", v) for k, v in value.items()]
        elif isinstance(value, (list, tuple)):
            items = [(f"{key}.{i}", v) for i, v in enumerate(value)]
        else:
            items = [(key, value)]
        for item_key, item in items:
            if isinstance(item, Config):
                yield from _path_slots(item, f"{item_key}.")


def path_fields(config: Config) -> dict[str, str]:
    """The set path fields (marked :data:`PATH`) of ``config`` and its sections: ``{dotted key: value}``."""
    return {key: getattr(section, name) for section, name, key in _path_slots(config)}


def resolve_paths(config: ConfigT, base: str | os.PathLike) -> ConfigT:
    """A copy of ``config`` whose relative path fields (:data:`PATH`) are joined to the folder
    ``base`` and normalised (``~`` expanded), so that they no longer depend on the working folder."""
    resolved = config.model_copy(deep=True)
    for section, name, _ in list(_path_slots(resolved)):
        value = Path(getattr(section, name)).expanduser()
        if not value.is_absolute():
            setattr(section, name, os.path.normpath(Path(base).absolute() / value))
    return resolved

"""Load OmegaConf YAML configs, apply dotlist overrides and validate them into typed objects."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from pydantic import BaseModel, ValidationError

from rxvision.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def load_config(path: Path | str, schema: type[M], overrides: list[str] | None = None) -> M:
    """Read ``path``, merge ``key=value`` overrides, resolve interpolations, validate.

    Raises ``ConfigError`` naming the file and the bad key.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = OmegaConf.load(path)
    except (OmegaConfBaseException, OSError, ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot parse YAML: {exc}") from exc
    return validate_config(raw, schema, overrides, source=str(path))


def validate_config(
    raw: Any, schema: type[M], overrides: list[str] | None = None, source: str = "<config>"
) -> M:
    """Merge overrides into ``raw`` (a DictConfig or a dict) and validate it against ``schema``."""
    base = raw if isinstance(raw, DictConfig) else OmegaConf.create(raw or {})
    try:
        merged = OmegaConf.merge(base, OmegaConf.from_dotlist(list(overrides or [])))
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(
            f"{source}: key '{key}': {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_errors(exc)}") from exc


def format_validation_errors(exc: ValidationError) -> str:
    """One line per bad key: ``model.architecture: Input should be 'resnet18', ...``."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(part) for part in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key '{key}'")
        else:
            lines.append(f"key '{key}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)


def to_flat_dict(model: BaseModel) -> dict[str, Any]:
    """Flatten a config into ``{"training.optimizer.lr": 1e-4, ...}`` (e.g. MLflow params)."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            flat[prefix] = value

    walk("", model.model_dump(mode="json"))
    return flat

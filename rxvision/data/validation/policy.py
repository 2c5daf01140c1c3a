"""ValidationPolicy: the thresholds of every criterion and what each does when it fails,
read from a mapping or a YAML/JSON config file (``data.validation`` section)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rxvision.data.validation.criteria import CRITERIA, DEFAULT_SEVERITY, INTEGRITY, Severity
from rxvision.errors import ConfigError


class ValidationPolicy(BaseModel):
    """Thresholds and what each criterion does when it fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_width: int = Field(default=224, ge=1, description="smallest accepted width, px")
    min_height: int = Field(default=224, ge=1, description="smallest accepted height, px")
    max_imbalance: float = Field(
        default=0.20, ge=0.0, le=1.0, description="1 - min/max class count"
    )
    min_classes: int = Field(default=2, ge=1)
    max_pixels: int = Field(default=50_000_000, ge=1, description="header width x height limit")
    max_file_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    file_timeout_s: float = Field(default=10.0, gt=0.0, description="decode time limit per file")
    extensions: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff")
    formats: tuple[str, ...] = ("JPEG", "PNG", "BMP", "GIF", "TIFF")
    split_names: tuple[str, ...] = ("train", "val", "test")
    quarantine: bool = False
    max_quarantine_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    severity: dict[str, Severity] = Field(default_factory=dict)

    @field_validator("extensions")
    @classmethod
    def _dotted_lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ext.lower() if ext.startswith(".") else f".{ext.lower()}" for ext in value)

    @field_validator("formats")
    @classmethod
    def _upper(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(fmt.upper() for fmt in value)

    @field_validator("severity")
    @classmethod
    def _known_criteria(cls, value: dict[str, Severity]) -> dict[str, Severity]:
        unknown = sorted(set(value) - set(CRITERIA))
        if unknown:
            raise ValueError(f"unknown criteria {unknown}; known: {list(CRITERIA)}")
        if value.get(INTEGRITY) == Severity.WARNING:
            raise ValueError(
                "integrity cannot be a warning: a file that does not decode cannot be "
                "trained on (use quarantine: true to exclude such files instead)"
            )
        return value

    def severity_of(self, criterion: str) -> Severity:
        """The configured severity of ``criterion``, else its default."""
        return self.severity.get(criterion, DEFAULT_SEVERITY[criterion])

    def is_blocking(self, criterion: str) -> bool:
        """True when a failure of ``criterion`` fails the run (or quarantines the file)."""
        return self.severity_of(criterion) is Severity.BLOCKING

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "policy") -> ValidationPolicy:
        """Build from a mapping; an invalid key raises ConfigError naming it."""
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in err['loc']) or '<root>'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"{source}: invalid validation policy: {problems}") from exc

    @classmethod
    def from_file(cls, path: Path, **overrides: Any) -> ValidationPolicy:
        """Read a YAML/JSON file: its ``data.validation`` or ``validation`` section, else
        the whole mapping; ``overrides`` (e.g. from CLI options) win."""
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read validation config {path}: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping at the top, got {type(loaded).__name__}")
        section = loaded
        if isinstance(loaded.get("data"), dict) and "validation" in loaded["data"]:
            section = loaded["data"]["validation"]
        elif "validation" in loaded:
            section = loaded["validation"]
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: the validation section must be a mapping")
        return cls.from_mapping({**section, **overrides}, source=str(path))

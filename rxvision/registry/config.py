"""The registry's configuration (``configs/registry.yaml``): registered model name,
tracking server, production gates and the alias name of each role."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from rxvision.config.load import load_config, validate_config
from rxvision.home import repo_root
from rxvision.registry.gates import GateConfig

DEFAULT_CONFIG = repo_root() / "configs" / "registry.yaml"
# another registry config for every process of a deployment (e.g. a test stack's gates)
ENV_REGISTRY_CONFIG = "RXVISION_REGISTRY_CONFIG"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AliasNames(_Strict):
    """The aliases of the three roles."""

    challenger: str = "challenger"
    champion: str = "champion"
    fallback: str = "fallback"


class RegistryConfig(_Strict):
    """The registry (``configs/registry.yaml``): model name, tracking server, gates."""

    model_name: str = Field("rxvision-pill-classifier", min_length=1)
    tracking_uri: str | None = None
    gates: GateConfig = Field(default_factory=GateConfig)
    aliases: AliasNames = Field(default_factory=AliasNames)


def load_registry_config(
    path: Path | str | None = None, overrides: list[str] | None = None
) -> RegistryConfig:
    """``configs/registry.yaml`` (or ``path``, else ``$RXVISION_REGISTRY_CONFIG``) with
    overrides; the defaults when there is no file and no path was given (e.g. in a
    container without the repository)."""
    path = path or os.environ.get(ENV_REGISTRY_CONFIG) or None
    if path is None and not DEFAULT_CONFIG.is_file():
        return validate_config({}, RegistryConfig, overrides, source="registry defaults")
    return load_config(path or DEFAULT_CONFIG, RegistryConfig, overrides)

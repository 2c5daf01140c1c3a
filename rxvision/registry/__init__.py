"""The model registry: production gates, lineage tags and MLflow aliases.

``ModelRegistry.register_model`` registers a trained model only when it passes the
gates (``ModelQualityError`` otherwise); ``promote`` and ``rollback`` move the
``challenger``/``champion``/``fallback`` aliases.
"""

from rxvision.registry.aliases import AliasChange, VersionInfo
from rxvision.registry.config import RegistryConfig, load_registry_config
from rxvision.registry.gates import (
    ChampionBaseline,
    Criterion,
    EvalSummary,
    GateConfig,
    GateReport,
    ModelQualityError,
    classification_metrics,
    evaluate_gates,
)
from rxvision.registry.lineage import VersionMetadata
from rxvision.registry.model_registry import ModelRegistry

__all__ = [
    "AliasChange",
    "ChampionBaseline",
    "Criterion",
    "EvalSummary",
    "GateConfig",
    "GateReport",
    "ModelQualityError",
    "ModelRegistry",
    "RegistryConfig",
    "VersionInfo",
    "VersionMetadata",
    "classification_metrics",
    "evaluate_gates",
    "load_registry_config",
]

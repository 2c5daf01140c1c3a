"""The model registry: production gates, lineage tags and MLflow aliases.

``ModelRegistry.register_model`` registers a trained model only when it passes the
gates (``ModelQualityError`` otherwise); ``promote`` and ``rollback`` move the
``challenger``/``champion``/``fallback`` aliases.
"""

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
from rxvision.registry.model_registry import (
    AliasChange,
    ModelRegistry,
    RegistryConfig,
    VersionInfo,
    VersionMetadata,
    load_registry_config,
)

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

"""Build the data components (snapshots, feature store, validator policy) from config."""

from __future__ import annotations

from pathlib import Path

from rxvision.config.load import load_config
from rxvision.config.schema import DataConfig
from rxvision.data.feature_store import FeatureStore, PreprocessConfig
from rxvision.data.snapshot import SnapshotSettings, SnapshotStore
from rxvision.data.validation import ValidationPolicy
from rxvision.home import Home, repo_root


def default_data_config_path() -> Path:
    """``configs/data.yaml`` in the repository."""
    return repo_root() / "configs" / "data.yaml"


def load_data_config(path: Path | None = None, overrides: list[str] | None = None) -> DataConfig:
    """The data config, validated (errors name the key)."""
    return load_config(path or default_data_config_path(), DataConfig, overrides)


def snapshot_store(cfg: DataConfig, home: Home | None = None) -> SnapshotStore:
    """The snapshot registry named by config (default: a bare repo in the home)."""
    home = (home or Home.from_env()).ensure()
    registry = cfg.registry.url or str(home.root / "data-registry.git")
    return SnapshotStore(
        SnapshotSettings(
            registry_url=registry,
            remote_url=cfg.registry.remote,
            cache_dir=home.cache_dir,
            endpoint_url=cfg.registry.endpoint_url,
            jobs=cfg.registry.jobs,
            shard_size=cfg.registry.shard_size,
            keep_only_latest=cfg.registry.local_snapshots > 0,
        )
    )


def feature_store(cfg: DataConfig) -> FeatureStore:
    """The feature store under the configured S3 root."""
    return FeatureStore(cfg.feature_store.uri)


def preprocess_config(cfg: DataConfig) -> PreprocessConfig:
    """How the feature store resizes images."""
    return PreprocessConfig(img_size=cfg.feature_store.img_size)


def validation_policy(cfg: DataConfig) -> ValidationPolicy:
    """The validator's policy from the ``validation`` section."""
    return ValidationPolicy.from_mapping(cfg.validation, source="configs/data.yaml: validation")

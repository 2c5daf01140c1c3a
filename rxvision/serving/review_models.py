"""Where the review gallery finds each model version it shows: the version's
preprocessing contract and the reference photos of its training run.

A prediction row names the model version that scored it (``model_version``). The gallery
re-makes that row's input crop with the version's preprocessing contract (the stored
``ImageSpec``, read from the version's ``MLmodel`` file alone, not its weights) and shows,
beside each candidate, a reference photo of that product from the model's training split
(``rxvision.data.references``, logged by the training run; "no reference photo" for a
model trained before they were). A version that cannot be read still shows its items:
the whole photo, no references, and a note saying why.

Kept apart from the pages (``rxvision.serving.review_page``) and the writing
(``rxvision.serving.review_gallery``): this is the only part that talks to MLflow.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from rxvision.data.imaging import ImageSpec
from rxvision.data.references import REFERENCES_DIR, REFERENCES_INDEX
from rxvision.home import Home

log = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """What the gallery needs of one model version."""

    label: str
    spec: ImageSpec | None
    references: Callable[[str], bytes | None]
    # why the crop or the references cannot be shown (empty: nothing missing)
    note: str = ""


class ModelCatalog(Protocol):
    """Model versions by the ``model_version`` label prediction rows carry."""

    def info(self, label: str) -> ModelInfo: ...


def _no_reference(_: str) -> bytes | None:
    return None


def model_uri_of(label: str) -> str:
    """The URI of a row's ``model_version``: ``name/3`` is ``models:/name/3``; a
    label that is a URI already (``runs:/...``, ``models:/m-...``) is itself."""
    return label if ":/" in label else f"models:/{label}"


class RunReferences:
    """A training run's reference photos, each downloaded at most once: kept under
    ``cache_dir/<run id>/`` (a finished run's artifacts do not change), so later
    galleries of the same model read them from disk."""

    def __init__(self, client: Any, run_id: str, cache_dir: Path) -> None:
        self.client = client
        self.run_id = run_id
        self.folder = cache_dir / run_id
        self._index: dict[str, Any] | None = None
        self._photos: dict[str, bytes | None] = {}

    def index(self) -> dict[str, Any]:
        """``references/index.json`` of the run; empty when it logged none."""
        if self._index is None:
            data = self._artifact(REFERENCES_INDEX) if self._logged() else None
            self._index = dict(json.loads(data)) if data else {}
        return self._index

    def _logged(self) -> bool:
        """Whether the run logged references: one listing. (Asking for a missing artifact
        instead costs minutes: the proxied store answers 500, which MLflow's client
        retries with backoff.)"""
        if (self.folder / REFERENCES_INDEX).is_file():
            return True
        try:
            listed = {a.path for a in self.client.list_artifacts(self.run_id, REFERENCES_DIR)}
        except Exception as exc:  # the page shows placeholders; the log says why
            log.warning("run %s: references not listed: %s", self.run_id, exc)
            return False
        if REFERENCES_INDEX not in listed:
            log.info("run %s logged no reference photos (trained before they were)", self.run_id)
        return REFERENCES_INDEX in listed

    def get(self, class_name: str) -> bytes | None:
        """The JPEG reference of ``class_name`` (None when the run has none)."""
        if class_name not in self._photos:
            entry = self.index().get("classes", {}).get(class_name)
            path = f"{REFERENCES_DIR}/{entry['file']}" if entry else None
            self._photos[class_name] = self._artifact(path) if path else None
        return self._photos[class_name]

    def _artifact(self, path: str) -> bytes | None:
        cached = self.folder / path
        if cached.is_file():
            return cached.read_bytes()
        try:
            data = self._download(path)
        except Exception as exc:  # the page shows the placeholder; the log says why
            log.warning("run %s: %s not downloaded: %s", self.run_id, path, exc)
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_name(f".{cached.name}.{uuid.uuid4().hex[:8]}")
        staging.write_bytes(data)
        staging.replace(cached)
        return data

    def _download(self, path: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="rxvision-ref-") as tmp:
            local = self.client.download_artifacts(self.run_id, path, tmp)
            return Path(local).read_bytes()


class MlflowCatalog:
    """Model versions from MLflow: the stored ``ImageSpec`` (from the version's
    ``MLmodel`` file alone, not its weights) and the training run's reference photos;
    each version is looked up once per catalog."""

    def __init__(self, tracking_uri: str | None = None, cache_dir: Path | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir or Home.from_env().cache_dir / "review"
        self._client: Any = None
        self._models: dict[str, ModelInfo] = {}

    @property
    def client(self) -> Any:
        """The MLflow client (built on first use)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def info(self, label: str) -> ModelInfo:
        """The model version named by a row's ``model_version``; a version that cannot be
        read still shows its items (the whole photo, no references) with a note why."""
        if label not in self._models:
            self._models[label] = self._lookup(label)
        return self._models[label]

    def _lookup(self, label: str) -> ModelInfo:
        if not (self.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")):
            # no server named: MLflow would open (and create) a store in the working
            # directory, where no model of this run is
            note = "no MLflow tracking server set (MLFLOW_TRACKING_URI): the whole photo is shown"
            return ModelInfo(label, None, _no_reference, note)
        try:
            return self._load(label)
        except Exception as exc:
            log.warning("review gallery: model %s unreadable: %s", label, exc)
            note = f"model {label} unreadable ({exc}): the whole photo is shown"
            return ModelInfo(label, None, _no_reference, note)

    def _load(self, label: str) -> ModelInfo:
        from rxvision.serving.model_loading import resolve_model

        ref = resolve_model(model_uri_of(label), self.client)
        metadata = self._metadata(ref)
        spec = ImageSpec.from_dict(metadata.get("preprocessing") or {}, source=f"model {label}")
        if not ref.run_id:
            return ModelInfo(label, spec, _no_reference, "no training run: no reference photos")
        references = RunReferences(self.client, ref.run_id, self.cache_dir)
        return ModelInfo(label, spec, references.get)

    def _metadata(self, ref: Any) -> dict[str, Any]:
        """The ``metadata`` of the version's MLmodel: the scorer's local copy when it has
        one, else that one small file downloaded."""
        import mlflow.artifacts

        from rxvision.serving.model_loading import artifact_location, cache_key, default_cache_dir

        local = default_cache_dir() / cache_key(ref.cache_id) / "model" / "MLmodel"
        if ref.immutable and local.is_file():
            return _mlmodel_metadata(local)
        folder = Path(tempfile.mkdtemp(prefix="rxvision-mlmodel-"))
        try:
            got = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{artifact_location(ref, self.client)}/MLmodel",
                dst_path=str(folder),
                tracking_uri=self.client.tracking_uri,
            )
            return _mlmodel_metadata(Path(got))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _mlmodel_metadata(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    return dict(data.get("metadata") or {})

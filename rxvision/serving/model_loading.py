"""Loading a model from MLflow: resolve its URI, download it once per version, load it.

A URI (``models:/name@alias``, ``models:/name/version``, ``models:/m-<id>``,
``runs:/<run>/model``) resolves to a ``ModelRef`` (an alias is pinned to the version it
points at now). Immutable versions are downloaded once into the local cache
(``$RXVISION_HOME/cache/serving``), which every shard of a run then shares.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

from torch import nn

from rxvision.data.imaging import ImageSpec
from rxvision.errors import ConfigError, NotFound, RxVisionError
from rxvision.home import Home
from rxvision.serving.model_contract import LoadedModel, ModelRef, serving_model

log = logging.getLogger(__name__)


_ALIAS = re.compile(r"^models:/(?P<name>[^/@]+)@(?P<alias>[^/]+)$")
_VERSION = re.compile(r"^models:/(?P<name>[^/@]+)/(?P<version>\d+)$")


def resolve_model(uri: str, client: Any | None = None) -> ModelRef:
    """Resolve ``models:/name@alias``, ``models:/name/version``, ``models:/m-<id>`` or
    ``runs:/<run>/model`` (an alias is pinned to the version it points at now)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = client or MlflowClient()
    try:
        if match := _ALIAS.match(uri):
            mv = client.get_model_version_by_alias(match["name"], match["alias"])
            return _version_ref(uri, match["name"], str(mv.version), mv)
        if match := _VERSION.match(uri):
            mv = client.get_model_version(match["name"], match["version"])
            return _version_ref(uri, match["name"], str(mv.version), mv)
    except MlflowException as exc:
        raise NotFound(f"model {uri} not found in the registry: {exc.message}") from exc
    if uri.startswith("runs:/"):
        return ModelRef(uri, uri, uri, run_id=uri.removeprefix("runs:/").split("/", 1)[0])
    if uri.startswith("models:/"):
        return ModelRef(uri, uri, uri)
    raise ConfigError(
        f"model URI {uri!r}: expected models:/name@alias, models:/name/version, "
        "models:/m-<id> or runs:/<run_id>/model"
    )


def _version_ref(uri: str, name: str, version: str, mv: Any) -> ModelRef:
    return ModelRef(
        uri=uri,
        pinned_uri=f"models:/{name}/{version}",
        label=f"{name}/{version}",
        registered_name=name,
        version=version,
        run_id=mv.run_id,
        tags=dict(mv.tags or {}),
    )


def load_model(
    uri: str, *, tracking_uri: str | None = None, cache_dir: Path | None = None
) -> LoadedModel:
    """Download (once per immutable version) a logged classifier and read its contract
    (classes, preprocessing, calibration); its network is unpickled, on CPU, when first
    used (``LoadedModel.model``)."""
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    ref = resolve_model(uri, client)
    local = _download(ref, cache_dir or default_cache_dir(), client)
    logged = Model.load(str(local / "MLmodel"))
    flavor = logged.flavors.get("pytorch") or {}
    metadata = logged.metadata or {}
    classes = metadata.get("classes")
    if not classes:
        raise ConfigError(f"model {uri} has no classes metadata: was it logged by RxVision?")
    # the preprocessing contract: refused when missing or of another decode version
    spec = ImageSpec.from_dict(metadata.get("preprocessing") or {}, source=f"model {uri}")
    temperature = float(metadata.get("temperature") or 1.0)
    threshold = metadata.get("review_threshold")
    log.info(
        "loaded %s (%s): %d classes, %s, temperature %.3f",
        uri,
        ref.label,
        len(classes),
        spec.describe(),
        temperature,
    )
    return LoadedModel(
        lambda: serving_model(load_logged_net(local, flavor)).eval(),
        [str(c) for c in classes],
        spec,
        ref,
        local,
        temperature=temperature,
        review_threshold=None if threshold is None else float(threshold),
    )


def load_logged_net(local: Path, flavor: dict[str, Any]) -> nn.Module:
    """The ``nn.Module`` of a model logged by ``mlflow.pytorch`` (pickle format), on CPU.

    ``import mlflow.pytorch`` imports its Lightning autologging, and with it Lightning,
    torchmetrics and ``torch._dynamo``: 4-7 s in every scoring and registration task, for
    one file that ``torch.load`` reads. The flavor records that file (``model_data``) and
    its pickle module, ``mlflow.pytorch.pickle_module``, which is cloudpickle, whose load
    is the standard library's. Any other layout (a ``pt2`` export) goes to MLflow."""
    data = local / str(flavor.get("model_data") or "data")
    weights = data / "model.pth"
    pickle_info = data / "pickle_module_info.txt"
    recorded = pickle_info.read_text().strip() if pickle_info.is_file() else ""
    if weights.is_file() and recorded in _STDLIB_LOADABLE_PICKLE_MODULES:
        import torch

        # the registry's own artifact, trusted as mlflow.pytorch.load_model trusts it
        return torch.load(weights, map_location="cpu", weights_only=False)
    import mlflow.pytorch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's pickle-format caution, on every load
        return mlflow.pytorch.load_model(str(local), map_location="cpu")


# pickle modules whose files the standard unpickler reads (cloudpickle's load is pickle's)
_STDLIB_LOADABLE_PICKLE_MODULES = frozenset(
    {"mlflow.pytorch.pickle_module", "cloudpickle", "pickle"}
)


def default_cache_dir() -> Path:
    """``$RXVISION_HOME/cache/serving``."""
    return Home.from_env().cache_dir / "serving"


def cache_key(label: str) -> str:
    """A folder name for a model label."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[-60:]
    return f"{safe}-{hashlib.sha256(label.encode()).hexdigest()[:8]}"


def artifact_location(ref: ModelRef, client: Any) -> str:
    """Where the model's files are stored, found through ``client``. (MLflow resolves a
    ``models:/`` URI through the default tracking server whatever tracking URI it is
    given, so the location is resolved here, with the client of the right server.)"""
    from mlflow.exceptions import MlflowException

    source = ref.pinned_uri
    try:
        if ref.registered_name and ref.version:
            mv = client.get_model_version(ref.registered_name, ref.version)
            source = str(mv.source)
            if getattr(mv, "model_id", None):
                return str(client.get_logged_model(mv.model_id).artifact_location)
        if source.startswith("models:/m-"):
            model_id = source.removeprefix("models:/").split("/", 1)[0]
            return str(client.get_logged_model(model_id).artifact_location)
        if source.startswith("runs:/"):
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            run = client.get_run(run_id)
            found = client.search_logged_models(
                experiment_ids=[run.info.experiment_id],
                filter_string=f"source_run_id = '{run_id}' AND name = '{path or 'model'}'",
            )
            if found:
                return str(found[0].artifact_location)
            return f"{run.info.artifact_uri}/{path}"
    except MlflowException as exc:
        raise NotFound(f"model {ref.uri}: {exc.message}") from exc
    return source


def _download(ref: ModelRef, cache_dir: Path, client: Any) -> Path:
    """The model's local folder; versions are immutable, so one download serves all shards."""
    import mlflow.artifacts

    target = cache_dir / cache_key(ref.cache_id) / "model"
    if ref.immutable and (target / "MLmodel").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=".dl-"))
    try:
        location = artifact_location(ref, client)
        got = mlflow.artifacts.download_artifacts(
            artifact_uri=location, dst_path=str(staging), tracking_uri=client.tracking_uri
        )
        if target.exists():
            shutil.rmtree(target)
        Path(got).replace(target)  # the folder itself, whatever its name in the store
    except Exception as exc:
        if isinstance(exc, RxVisionError):
            raise
        raise NotFound(f"cannot download model {ref.uri}: {exc}") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

"""What a training model URI names: ``models:/m-<id>`` (a logged model) or
``runs:/<run>/<path>``, resolved to the source to register, its training run and logged
model id; and the class names the logged model carries in its MLmodel metadata.
"""

from __future__ import annotations

import logging
import tempfile

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rxvision.errors import ConfigError, NotFound

log = logging.getLogger(__name__)


def resolve_source(client: MlflowClient, model_uri: str) -> tuple[str, str, str | None]:
    """(source, run id, logged model id) of a ``models:/m-...`` or ``runs:/`` URI."""
    if model_uri.startswith("runs:/"):
        run_id, _, path = model_uri.removeprefix("runs:/").partition("/")
        model_id = _logged_model_of_run(client, run_id, path or "model")
        return (f"models:/{model_id}" if model_id else model_uri), run_id, model_id
    if model_uri.startswith("models:/m-"):
        model_id = model_uri.removeprefix("models:/").split("/", 1)[0]
        try:
            logged = client.get_logged_model(model_id)
        except MlflowException as exc:
            raise NotFound(f"no logged model {model_id} ({model_uri}): {exc}") from exc
        if not logged.source_run_id:
            raise NotFound(f"logged model {model_uri} has no source run: cannot register it")
        return model_uri, str(logged.source_run_id), model_id
    raise ConfigError(
        f"cannot register {model_uri!r}: expected a training model URI "
        "(models:/m-<id> or runs:/<run_id>/model)"
    )


def _logged_model_of_run(client: MlflowClient, run_id: str, name: str) -> str | None:
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise NotFound(f"no MLflow run {run_id}: {exc}") from exc
    found = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{name}'",
    )
    return str(found[0].model_id) if found else None


def model_classes(client: MlflowClient, source: str, model_id: str | None) -> tuple[str, ...]:
    """The logged model's class names (its ``classes`` metadata); empty when it has none."""
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    try:
        if model_id:
            location = str(client.get_logged_model(model_id).artifact_location)
        else:  # runs:/RUN/path of a model logged without a logged-model entry
            run_id, _, path = source.removeprefix("runs:/").partition("/")
            location = f"{client.get_run(run_id).info.artifact_uri}/{path or 'model'}"
        with tempfile.TemporaryDirectory(prefix="rxv-mlmodel-") as tmp:
            local = download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/MLmodel",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
            metadata = Model.load(local).metadata or {}
    except MlflowException as exc:
        raise NotFound(f"cannot read the MLmodel of {source}: {exc}") from exc
    classes = metadata.get("classes") or ()
    if not classes:
        log.warning("%s has no classes metadata: classes without test images go unseen", source)
    return tuple(str(c) for c in classes)

"""The MLflow UI after the main job, in headless Chromium: the registered model's page
shows which version is the champion, and the champion's training run shows its plots
(PNG, read through MLflow's artifact proxy from S3) as images a person can look at."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_helpers import MODEL
from mlflow.tracking import MlflowClient

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.timeout(3600)]

PLOTS = ("plots/confusion_matrix.png", "plots/loss_curve.png", "plots/confused_pairs.png")
# the artifact viewer shows an image from a blob: URL once its bytes arrived
SHOWN_WIDTH = """() => [...document.images]
    .filter(i => i.src.startsWith('blob:') && i.complete)
    .map(i => i.naturalWidth)[0]"""


def version_row_text(page: Any, base: str, version: str) -> str:
    """The text of one version's row on the registered model's page."""
    page.goto("about:blank")
    page.goto(f"{base}/#/models/{MODEL}", wait_until="load")
    link = page.get_by_role("link", name=f"Version {version}", exact=True)
    row = page.get_by_role("row").filter(has=link)
    row.get_by_text("@").first.wait_for()  # the aliases column has rendered
    return str(row.inner_text())


def test_the_champion_and_its_plots_show_in_the_mlflow_ui(
    main_job: dict[str, Any], e2e_env: dict[str, str], page: Any
) -> None:
    base = e2e_env["MLFLOW_TRACKING_URI"]
    champion = MlflowClient(base).get_model_version_by_alias(MODEL, "champion")
    assert "@ champion" in " ".join(version_row_text(page, base, champion.version).split())

    experiment = MlflowClient(base).get_run(champion.run_id).info.experiment_id
    for plot in PLOTS:
        url = f"{base}/#/experiments/{experiment}/runs/{champion.run_id}/artifacts/{plot}"
        page.goto("about:blank")  # a hash change alone keeps the last plot on screen
        page.goto(url, wait_until="load")
        page.get_by_text(plot, exact=True).first.wait_for()  # the viewer names the file
        assert page.wait_for_function(SHOWN_WIDTH).json_value() > 100, plot

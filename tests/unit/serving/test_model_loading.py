"""Resolving model URIs without the registry, refusing unknown ones, and reading a logged
net with torch alone."""

from __future__ import annotations

import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from rxvision.errors import ConfigError
from rxvision.serving.model_loading import load_logged_net, resolve_model

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("uri", ["s3://bucket/model", "pills@champion", "models"])
def test_resolve_model_refuses_unknown_uris(uri: str) -> None:
    with pytest.raises(ConfigError, match="model URI"):
        resolve_model(uri, client=object())


def test_runs_uri_resolves_without_the_registry() -> None:
    ref = resolve_model("runs:/abc123/model", client=object())
    assert ref.run_id == "abc123" and ref.label == "runs:/abc123/model" and ref.immutable


def _saved_model(tmp_path: Path) -> tuple[Path, nn.Module]:
    import mlflow.pytorch

    torch.manual_seed(0)
    net = nn.Sequential(OrderedDict(backbone=nn.Flatten(), head=nn.Linear(12, 3))).eval()
    folder = tmp_path / "model"
    mlflow.pytorch.save_model(
        net, str(folder), serialization_format="pickle", pip_requirements=["torch"]
    )
    return folder, net


def test_logged_net_loads_with_torch_alone_and_gives_the_same_outputs(tmp_path: Path) -> None:
    from mlflow.models import Model

    folder, net = _saved_model(tmp_path)
    flavor = Model.load(str(folder / "MLmodel")).flavors["pytorch"]
    loaded = load_logged_net(folder, flavor)
    x = torch.rand(2, 3, 2, 2)
    assert torch.equal(loaded(x), net(x))


def test_loading_a_logged_net_does_not_import_lightning(tmp_path: Path) -> None:
    # mlflow.pytorch imports Lightning for its autologging: seconds in every scoring task
    folder, _ = _saved_model(tmp_path)
    probe = (
        "import sys\n"
        "from mlflow.models import Model\n"
        "from rxvision.serving.model_loading import load_logged_net\n"
        f"folder = {str(folder)!r}\n"
        "net = load_logged_net(__import__('pathlib').Path(folder),"
        " Model.load(folder + '/MLmodel').flavors['pytorch'])\n"
        "print(type(net).__name__, 'pytorch_lightning' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.split() == ["Sequential", "False"]


def test_a_model_without_the_pickled_file_goes_to_mlflow(tmp_path: Path) -> None:
    folder, _ = _saved_model(tmp_path)
    (folder / "data" / "model.pth").unlink()
    with pytest.raises(Exception, match="model"):
        load_logged_net(folder, {"model_data": "data"})

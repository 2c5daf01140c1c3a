"""torch.compile as an option (trainer.compile=true): the compiled backbone trains, gives
the eager model's outputs, and keeps the state_dict keys (checkpoints and exports do not
depend on whether a run compiled)."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from rxvision.home import Home
from rxvision.train.config import TrainConfig
from rxvision.train.run import build_module

pytestmark = pytest.mark.unit

CLASSES = ["a", "b", "c"]


def config(compile_: bool) -> TrainConfig:
    return TrainConfig.model_validate(
        {
            "model": {
                "architecture": "mobilenet_v3_small",
                "pretrained": False,
                "allow_random_init": True,
            },
            "trainer": {"accelerator": "cpu", "compile": compile_},
        }
    )


def test_compiled_backbone_trains_matches_eager_and_keeps_keys(tmp_path) -> None:  # type: ignore[no-untyped-def]
    home = Home(tmp_path).ensure()
    torch.manual_seed(0)
    compiled = build_module(config(True), CLASSES, steps_per_epoch=2, home=home)
    eager = build_module(config(False), CLASSES, steps_per_epoch=2, home=home)
    assert set(compiled.state_dict()) == set(eager.state_dict())
    eager.load_state_dict(compiled.state_dict())

    images = torch.randn(4, 3, 32, 32)
    compiled.eval()
    eager.eval()
    with torch.no_grad():
        assert torch.allclose(compiled(images), eager(images), atol=1e-4)

    data = TensorDataset(torch.randn(8, 3, 32, 32), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1]))
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    compiled.train()
    before = {k: v.clone() for k, v in compiled.state_dict().items()}
    trainer.fit(compiled, train_dataloaders=DataLoader(data, batch_size=4))
    assert trainer.global_step == 2
    changed = [k for k, v in compiled.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("backbone.") for k in changed)

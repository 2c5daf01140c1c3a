"""What a training run produced (``TrainResult``), and how a run is named."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class TrainResult:
    """What a run produced; ``summary()`` is the JSON the CLI writes."""

    run_id: str
    global_step: int
    max_steps: int
    metrics: dict[str, float]
    checkpoint_uri: str | None
    best_checkpoint_uri: str | None
    resumed_from: str | None
    precision: str
    classes: list[str]
    seconds: float
    is_global_zero: bool = True
    mlflow_run_id: str | None = None
    model_uri: str | None = None
    tracking_uri: str | None = None
    data: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)

    def write(self, path: Path) -> None:
        """Write ``summary()`` as JSON, atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.tmp")
        temp.write_text(json.dumps(self.summary(), indent=2, sort_keys=True))
        temp.replace(path)


def new_run_id() -> str:
    """A fresh run id: UTC time and a random suffix."""
    return f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"

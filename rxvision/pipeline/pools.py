"""The Airflow pools the DAGs use: one slot each, so overlapping runs take turns.

Two nightly runs can overlap (a backfill is bounded only by its own ``max_active_runs``):
one slot for ``train`` keeps two training containers off one GPU host and one checkpoint
store, one for ``register`` serialises the gate-compare-promote sequence. The scheduler
never schedules a task whose pool does not exist, so every deployment creates these
(``rxvision stack up``, infra/compose's ``airflow-init``, infra/aws's README).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pool:
    """An Airflow pool: its name, slot count and description."""

    name: str
    slots: int
    description: str


TRAIN = Pool("rxvision_train", 1, "RxVision: one training container at a time")
REGISTER = Pool("rxvision_register", 1, "RxVision: one gate-and-promote at a time")
POOLS = (TRAIN, REGISTER)


def write_pools_file(path: Path) -> Path:
    """The pools as ``airflow pools import`` reads them; return ``path``."""
    body = {
        p.name: {"slots": p.slots, "description": p.description, "include_deferred": False}
        for p in POOLS
    }
    path.write_text(json.dumps(body, indent=2))
    return path

"""Byte-identical files across the dataset, found by SHA-256: the same bytes under two
products (label conflict), in two splits (split leakage: the training copy is kept) or
twice in one product (duplicate).
"""

from __future__ import annotations

from rxvision.data.decode import DUPLICATE, LABEL_CONFLICT, SPLIT_LEAKAGE
from rxvision.data.validation.scan import ScanMetrics


def flag_duplicates(metrics: ScanMetrics, split_order: tuple[str, ...]) -> None:
    """Same bytes filed twice: under two labels (conflict), in two splits (leakage), or
    twice in one product (duplicate)."""
    for keys in metrics.hashes.values():
        if len(keys) < 2:
            continue
        keys = sorted(keys)
        entries = [metrics.entries[k] for k in keys]
        labels = sorted({e.label for e in entries})
        if len(labels) > 1:
            for entry in entries:
                others = _others(keys, entry.key)
                metrics.flag(
                    entry.key,
                    LABEL_CONFLICT,
                    f"same bytes as {others} filed under another product (labels: "
                    f"{', '.join(labels)})",
                )
            continue
        rank = {name: i for i, name in enumerate(split_order)}
        entries.sort(key=lambda e: (rank.get(e.split or "", -1), e.key))
        keeper = entries[0]
        for entry in entries[1:]:
            if entry.split != keeper.split:
                metrics.flag(
                    entry.key,
                    SPLIT_LEAKAGE,
                    f"same bytes as {keeper.key} in split {keeper.split}: a copy in "
                    f"{entry.split} leaks training data into evaluation",
                )
            else:
                metrics.flag(entry.key, DUPLICATE, f"same bytes as {keeper.key}")


def _others(keys: list[str], key: str, limit: int = 3) -> str:
    others = [k for k in keys if k != key]
    shown = ", ".join(others[:limit])
    return shown + (f" and {len(others) - limit} more" if len(others) > limit else "")

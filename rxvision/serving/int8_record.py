"""A version's record of its static INT8 judgement: the ``rxvision.serving.int8.*`` tags
its export set (``rxvision.serving.quantize``), read where a runtime is chosen and by
``rxvision status``. Light on purpose: reading it imports neither torch nor ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PREFIX = "rxvision.serving.int8."
# what a version's ``rxvision.serving.int8.gate`` tag says when its INT8 model was judged
# on calibration and the review queue as well as top-1 (before: top-1 only)
INT8_GATE = "top1+ece+review"
# the export's default limits for keeping INT8 against fp32 on held-out photos: here, not
# in ``quantize``, so that the CLI's option defaults import neither torch nor ONNX Runtime
MAX_TOP1_DROP_POINTS = 1.0
MAX_ECE_RISE = 0.02


def int8_judgement(tags: Mapping[str, str]) -> dict[str, Any] | None:
    """The export's INT8 figures from a version's tags (``kept``, ``top1_int8``, ...,
    ``refused`` when discarded), and ``scores``: whether CPU scoring may use it. None
    when INT8 was never tried (no calibration images at export)."""
    found = {key.removeprefix(PREFIX): val for key, val in tags.items() if key.startswith(PREFIX)}
    if "kept" not in found:
        return None
    return {**found, "scores": found.get("gate") == INT8_GATE}

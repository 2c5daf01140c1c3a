"""The validator: images/s on a synthetic set with planted bad files (corrupt, empty,
grayscale, too small, duplicate), and how it scales with worker processes.

The baseline is the plain loop a data scientist writes first: one process, PIL
``verify()`` then ``load()`` each file, check mode and size. The project's
``DataValidator`` decodes in isolated worker processes (a hostile file cannot hang or
crash the run), hashes for duplicates and checks class balance too.

    .venv/bin/python bench/validator.py [--per-class 200] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import harness
from PIL import Image

from rxvision.data.feature_store import list_image_folder
from rxvision.data.synth import generate_dataset
from rxvision.data.validation import DataValidator, ValidationPolicy


def plain_loop(root: Path) -> tuple[float, int]:
    """Files checked, and how many it flags (unreadable, not RGB, under 224 px)."""
    bad = 0
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix == ".jpg"]
    for path in files:
        try:
            with Image.open(path) as im:
                im.verify()
            with Image.open(path) as im:
                im.load()
                if im.mode != "RGB" or min(im.size) < 224:
                    bad += 1
        except Exception:
            bad += 1
    return float(len(files)), bad


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--size", type=int, default=288)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rxv-bench-val-") as tmp:
        root = Path(tmp) / "pills"
        synth = generate_dataset(
            root,
            classes=args.classes,
            per_class=args.per_class,
            size=args.size,
            seed=0,
            defects=True,
            lookalikes=False,
        )
        (root / "manifest.parquet").unlink(missing_ok=True)
        files = len(list_image_folder(root))
        found: dict[str, int] = {}

        def validator(workers: int) -> float:
            result = DataValidator(ValidationPolicy(), workers=workers).validate_dataset(root)
            found[f"DataValidator, {workers} workers"] = len(result.rejected) + len(
                result.quarantined
            )
            return float(result.summary.files)

        def baseline() -> float:
            count, bad = plain_loop(root)
            found["plain PIL loop, 1 process"] = bad
            return count

        cases = [harness.Case("plain PIL loop, 1 process", baseline)]
        cases += [
            harness.Case(f"DataValidator, {w} workers", lambda w=w: validator(w))
            for w in args.workers
        ]
        harness.measure(cases, repeats=args.repeats)
        rows = harness.summarize(cases, baseline=cases[0].name)
        harness.report(
            "validator",
            rows,
            unit="files/s",
            baseline=cases[0].name,
            params={**vars(args), "files": files, "planted": len(synth.defects)},
            extra={"flagged": found, "planted": [d.code for d in synth.defects]},
        )


if __name__ == "__main__":
    main()

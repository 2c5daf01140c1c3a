"""The validator: images/s on a synthetic set with planted bad files (corrupt, empty,
grayscale, too small, duplicate), and how it scales with worker processes.

The baseline is the plain loop a data scientist writes first: one process, PIL
``verify()`` then ``load()`` each file, check mode and size. The project's
``DataValidator`` decodes in isolated worker processes (a hostile file cannot hang or
crash the run), hashes for duplicates and checks class balance too. A second reference,
the plain loop split over two processes, is what this machine's two cores give a
decode-bound loop at all (the ceiling for the 2-worker case).

    .venv/bin/python bench/validator.py [--per-class 1200] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import harness
from PIL import Image

from rxvision.data.feature_store import list_image_folder
from rxvision.data.synth import generate_dataset
from rxvision.data.validation import DataValidator, ValidationPolicy


def plain_loop(root: Path) -> tuple[float, int]:
    """Files checked, and how many it flags (unreadable, not RGB, under 224 px)."""
    files = [p for p in root.rglob("*") if p.is_file() and p.suffix == ".jpg"]
    return float(len(files)), plain_checks(files)


def plain_checks(files: list[Path]) -> int:
    """The plain loop's checks over ``files``; how many it flags."""
    bad = 0
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
    return bad


def plain_loop_two_processes(root: Path, pool: ProcessPoolExecutor) -> float:
    """The plain loop split over two processes: what this machine's two cores give a
    decode-bound loop with no checks, no isolation and no hashing (the ceiling)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix == ".jpg")
    list(pool.map(plain_checks, [files[0::2], files[1::2]]))
    return float(len(files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--per-class", type=int, default=1200)
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

        two = ProcessPoolExecutor(2)
        cases = [
            harness.Case("plain PIL loop, 1 process", baseline),
            harness.Case(
                "plain PIL loop, 2 processes", lambda: plain_loop_two_processes(root, two)
            ),
        ]
        cases += [
            harness.Case(f"DataValidator, {w} workers", lambda w=w: validator(w))
            for w in args.workers
        ]
        with two:
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

"""Products the model never trained on: how many of their photos pass the review queue.

A classifier names one of its own classes for every photo. A product missing from the
training catalogue (a new strength of a known product, a new product) gets the label of
the product it looks most like, and a row with ``needs_review`` false when its calibrated
confidence clears the version's review threshold. This benchmark measures how often that
happens, per unseen product, on the model's own scoring contract (``LoadedModel.load``:
the training decode and crop, then its temperature and threshold).

It also measures two scores a novelty check could use, from the network's features
(``ServingModel.forward(x, return_features=True)``, which every export carries): the
cosine distance to the nearest training photo, and the Mahalanobis distance to the
nearest class mean (a covariance shared by the classes). For each, the threshold that
keeps 95% of the known products' photos, and the share of each unseen product's photos
beyond it; and the AUROC of unseen against known. A benchmark: it asserts nothing.

    eval "$(.venv/bin/rxvision stack env)"
    .venv/bin/rxvision data pull --rev synthetic-v2 --out /tmp/train-photos
    .venv/bin/python bench/unseen_products.py --train /tmp/train-photos

``--photos DIR`` (``DIR/<product>/*``) scores your own photos; without it the built-in
catalogue's first ``--classes`` products are drawn (16: the built-in set's 8 and 8 it
leaves out, half of them another strength of one it keeps; ``--per-class`` photos each,
another seed than the training set's). Folder names among the model's classes are the
known products. Writes ``bench/results/unseen_products.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from harness import RESULTS, machine

KEEP_KNOWN = 0.95
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def photos_by_product(folder: Path) -> list[tuple[Path, str]]:
    """Every image under ``folder/<product>/`` with its product's folder name."""
    found = [
        (path, path.parent.name)
        for path in sorted(folder.glob("*/*"))
        if path.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not found:
        raise SystemExit(f"no images under {folder}/<product>/")
    return found


def draw_catalogue(out: Path, classes: int, per_class: int, seed: int) -> Path:
    """The built-in catalogue's first ``classes`` products, ``per_class`` photos each."""
    from rxvision.data.synth import generate_dataset

    generate_dataset(out, classes=classes, per_class=per_class, size=240, seed=seed, workers=2)
    return out


def features_and_probabilities(model: Any, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """The network's features and calibrated probabilities of each image, as scoring sees it."""
    import torch

    features, probabilities = [], []
    for start in range(0, len(paths), 64):
        batch = torch.stack([model.load(path) for path in paths[start : start + 64]])
        with torch.no_grad():
            out = model.model(batch, return_features=True)
        features.append(out["features"].float().numpy())
        probabilities.append(torch.softmax(out["logits"] / model.temperature, 1).numpy())
    return np.concatenate(features), np.concatenate(probabilities)


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to length 1."""
    return np.asarray(matrix / np.linalg.norm(matrix, axis=1, keepdims=True))


def nearest_photo_distance(features: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 - the cosine similarity to the nearest reference photo."""
    return np.asarray(1.0 - (unit_rows(features) @ unit_rows(reference).T).max(1))


def class_mean_distance(
    features: np.ndarray, reference: np.ndarray, labels: np.ndarray, classes: int
) -> np.ndarray:
    """The squared Mahalanobis distance to the nearest class mean (shared covariance)."""
    means = np.stack([reference[labels == c].mean(0) for c in range(classes)])
    centred = reference - means[labels]
    covariance = centred.T @ centred / len(centred) + 1e-3 * np.eye(reference.shape[1])
    precision = np.linalg.inv(covariance)
    diff = features[:, None, :] - means[None]
    return np.asarray(np.einsum("nkd,de,nke->nk", diff, precision, diff).min(1))


def auroc(positive: np.ndarray, negative: np.ndarray) -> float:
    """P(a positive scores above a negative), ties counting half (Mann-Whitney)."""
    above = (positive[:, None] > negative[None, :]).mean()
    ties = (positive[:, None] == negative[None, :]).mean()
    return float(above + 0.5 * ties)


def measure(model: Any, train: Path, photos: Path) -> dict[str, Any]:
    """The review queue's and each novelty score's figures, per unseen product."""
    reference = photos_by_product(train)
    unknown_classes = {name for _, name in reference} - set(model.classes)
    if unknown_classes:
        raise SystemExit(f"--train has folders that are not the model's classes: {unknown_classes}")
    ref_features, _ = features_and_probabilities(model, [p for p, _ in reference])
    ref_labels = np.array([model.classes.index(name) for _, name in reference])
    scored = photos_by_product(photos)
    features, probabilities = features_and_probabilities(model, [p for p, _ in scored])
    products = np.array([name for _, name in scored])
    known = np.isin(products, model.classes)
    if not known.any() or known.all():
        raise SystemExit("--photos needs products the model knows and products it does not")
    confidence, predicted = probabilities.max(1), probabilities.argmax(1)
    passes = confidence >= model.review_threshold_or_default
    scores = {
        "nearest photo (cosine)": nearest_photo_distance(features, ref_features),
        "nearest class mean (Mahalanobis)": class_mean_distance(
            features, ref_features, ref_labels, len(model.classes)
        ),
    }
    cuts = {name: float(np.quantile(s[known], KEEP_KNOWN)) for name, s in scores.items()}
    truth = np.array([model.classes.index(p) if p in model.classes else -1 for p in products])
    result: dict[str, Any] = {
        "review_threshold": model.review_threshold_or_default,
        "known": {
            "photos": int(known.sum()),
            "top1": float((predicted[known] == truth[known]).mean()),
            "pass_review": float(passes[known].mean()),
            "wrong_and_pass": float((passes & (predicted != truth))[known].mean()),
        },
        "auroc": {name: auroc(s[~known], s[known]) for name, s in scores.items()},
        "unseen": {},
    }
    for product in sorted(set(products[~known])):
        mine = products == product
        labels = Counter(model.classes[i] for i in predicted[mine])
        result["unseen"][product] = {
            "photos": int(mine.sum()),
            "pass_review": float(passes[mine].mean()),
            "labelled_as": labels.most_common(1)[0][0],
            "mean_confidence": float(confidence[mine].mean()),
            "caught": {name: float((s[mine] > cuts[name]).mean()) for name, s in scores.items()},
        }
    return result


def print_report(result: dict[str, Any]) -> None:
    """The figures as a table."""
    known = result["known"]
    print(
        f"known products: {known['photos']} photos, top-1 {known['top1']:.3f}, "
        f"{known['pass_review']:.2f} pass review (threshold {result['review_threshold']:.3f}), "
        f"{known['wrong_and_pass']:.3f} wrong and passed"
    )
    names = list(result["auroc"])
    print(
        f"caught: the share beyond the cut that keeps {KEEP_KNOWN:.0%} of the known photos, "
        "by " + "; ".join(f"{n} (AUROC {result['auroc'][n]:.3f})" for n in names)
    )
    print(f"{'unseen product':34s} {'photos':>6s} {'pass':>5s} {'conf':>5s}  labelled as")
    for product, row in result["unseen"].items():
        caught = ", ".join(f"{row['caught'][n]:.2f}" for n in names)
        print(
            f"{product:34s} {row['photos']:6d} {row['pass_review']:5.2f} "
            f"{row['mean_confidence']:5.2f}  {row['labelled_as']}  (caught: {caught})"
        )


def main() -> None:
    """Parse the arguments, measure, print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="models:/rxvision-pill-classifier@champion")
    parser.add_argument("--train", type=Path, required=True, help="the model's training photos")
    parser.add_argument("--photos", type=Path, help="DIR/<product>/* (default: draw them)")
    parser.add_argument("--classes", type=int, default=16)
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=RESULTS / "unseen_products.json")
    args = parser.parse_args()

    from rxvision.serving.model_loading import load_model

    model = load_model(args.model)
    with tempfile.TemporaryDirectory(prefix="rxb-unseen-") as tmp:
        photos = args.photos or draw_catalogue(
            Path(tmp) / "photos", args.classes, args.per_class, args.seed
        )
        result = measure(model, args.train, photos)
    print_report(result)
    payload = {"bench": "unseen_products", "model": args.model, "machine": machine(), **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()

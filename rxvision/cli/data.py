"""``rxvision data``: make synthetic datasets and validate datasets.

Each command checks its options, makes one library call and prints the outcome;
errors (``RxVisionError``) propagate to ``rxvision.cli.main``, which maps them to exit
codes. ``validate`` exits with DataValidationError's code when a blocking criterion
fails, after writing its report.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress

from rxvision.cli.progress import progress_bar
from rxvision.cli.tables import whole_cell_table
from rxvision.data.synth import generate_dataset
from rxvision.data.validation import DataValidator, ValidationPolicy, ValidationResult
from rxvision.errors import DataValidationError

app = typer.Typer(
    help="Synthetic datasets, validation, snapshots (DVC on S3) and the feature store.",
    no_args_is_help=True,
)

console = Console(stderr=True)

MAX_LISTED = 20  # rejected files printed; the report lists them all


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder to write (empty or new).")],
    classes: Annotated[int, typer.Option(help="Number of drug products.")] = 10,
    per_class: Annotated[int, typer.Option(help="Photographs per product.")] = 100,
    size: Annotated[int, typer.Option(help="Image width and height, px.")] = 224,
    seed: Annotated[int, typer.Option(help="Same seed, byte-identical files.")] = 0,
    defects: Annotated[
        bool, typer.Option("--defects", help="Plant bad files for validator demos.")
    ] = False,
    workers: Annotated[
        int | None, typer.Option(help="Drawing processes (default: all cores).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an earlier synthetic set in --out.")
    ] = False,
) -> None:
    """Draw photographs of pills into OUT/<product>/<image>.jpg plus OUT/manifest.parquet."""
    with _progress("drawing") as (bar, task):
        result = generate_dataset(
            out,
            classes=classes,
            per_class=per_class,
            size=size,
            seed=seed,
            defects=defects,
            workers=workers,
            overwrite=overwrite,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
    console.print(
        f"wrote {result.images} images of {len(result.labels)} products to {result.out} "
        f"({result.images_per_second:.0f} images/s, {result.workers} workers)"
    )
    for defect in result.defects:
        console.print(f"  planted {defect.code}: {defect.path}")
    if result.imbalanced_label:
        console.print(f"  imbalanced class: {result.imbalanced_label}")


@app.command()
def validate(
    report: Annotated[Path, typer.Option("--report", help="Where to write the JSON report.")],
    data: Annotated[
        Path | None,
        typer.Argument(
            help="Dataset folder: DIR/<class>/... or DIR/<split>/<class>/... (not with --rev)."
        ),
    ] = None,
    rev: Annotated[
        str | None,
        typer.Option(
            "--rev",
            help="A snapshot's tag or commit ('latest'), validated from its shards in place: "
            "nothing unpacked. The registry is the data config's (--config).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Decode processes (default: all cores).")
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            help="YAML/JSON with a validation policy (data.validation section); with --rev, "
            "the data config (configs/data.yaml): its registry and its validation section."
        ),
    ] = None,
    min_size: Annotated[
        int | None, typer.Option(help="Minimum width and height, px (default 224).")
    ] = None,
    quarantine: Annotated[
        bool | None,
        typer.Option(
            "--quarantine/--no-quarantine", help="Exclude and list bad files instead of failing."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Decode time limit per file, seconds.")
    ] = None,
) -> None:
    """Check every image and the dataset (a folder, or a snapshot with --rev).

    Writes the report; exits 5 on a blocking failure."""
    if (data is None) == (rev is None):
        raise typer.BadParameter("give either a dataset folder or --rev, not both")
    policy = _policy(config, min_size=min_size, quarantine=quarantine, timeout=timeout)
    with _progress("validating") as (bar, task):
        validator = DataValidator(
            policy, workers=workers, progress=lambda done: bar.update(task, completed=done)
        )
        if data is not None:
            result = validator.validate_dataset(data)
        else:
            result = _validate_snapshot(validator, str(rev), config)
    result.write_report(report)
    _print_result(result, report)
    if not result.ok:
        raise typer.Exit(code=DataValidationError.exit_code)


def _validate_snapshot(validator: DataValidator, rev: str, config: Path | None) -> ValidationResult:
    """Snapshot ``rev`` (a tag, commit or ``latest``) fetched and validated in place."""
    from rxvision.data.settings import snapshot_store

    store = snapshot_store(_data_config(config, None))
    tag = store.resolve(rev)
    with store.fetched(tag) as packed:
        return validator.validate_packed(packed, name=f"snapshot {tag}")


def _policy(
    config: Path | None, *, min_size: int | None, quarantine: bool | None, timeout: float | None
) -> ValidationPolicy:
    overrides: dict[str, Any] = {}
    if min_size is not None:
        overrides |= {"min_width": min_size, "min_height": min_size}
    if quarantine is not None:
        overrides["quarantine"] = quarantine
    if timeout is not None:
        overrides["file_timeout_s"] = timeout
    if config is not None:
        return ValidationPolicy.from_file(config, **overrides)
    return ValidationPolicy.from_mapping(overrides, source="command-line options")


def _progress(verb: str) -> AbstractContextManager[tuple[Progress, Any]]:
    return progress_bar(verb, console)


def _print_result(result: ValidationResult, report: Path) -> None:
    table = whole_cell_table(
        "criterion", "status", "value", "threshold", title=f"validation of {result.data_path}"
    )
    for criterion in result.criteria:
        colour = {"passed": "green", "failed": "red"}.get(criterion.status, "yellow")
        table.add_row(
            criterion.name,
            f"[{colour}]{criterion.status}[/{colour}]",
            str(criterion.value),
            str(criterion.threshold),
        )
    console.print(table)
    for issue in result.rejected[:MAX_LISTED]:
        console.print(f"  {issue.code}: {issue.path}: {issue.message}", markup=False)
    if len(result.rejected) > MAX_LISTED:
        console.print(f"  ... and {len(result.rejected) - MAX_LISTED} more in the report")
    summary = result.summary
    console.print(
        f"{summary.files} files, {summary.images_ok} accepted, {summary.rejected} rejected, "
        f"{len(result.warnings)} warnings; {summary.images_per_second:.0f} images/s "
        f"with {summary.workers} workers; report: {report}"
    )
    verdict = "[green]PASSED[/green]" if result.ok else "[red]FAILED[/red]"
    console.print(f"{verdict}: {', '.join(c.name for c in result.failed) or 'all criteria'}")


def _data_config(config: Path | None, overrides: list[str] | None) -> Any:
    from rxvision.data.settings import load_data_config

    return load_data_config(config, overrides)


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Data config (default configs/data.yaml).")
]


@app.command()
def snapshot(
    data_dir: Annotated[Path, typer.Argument(help="ImageFolder dataset: DIR/<product>/<image>.")],
    tag: Annotated[str, typer.Option("--tag", help="Snapshot tag (never moves), e.g. v3.")],
    exclude_from: Annotated[
        Path | None,
        typer.Option(help="A validation report: its rejected files are left out and listed."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Version DATA_DIR as an immutable snapshot: packed shards tracked by DVC on S3."""
    from rxvision.data.settings import snapshot_store

    store = snapshot_store(_data_config(config, None))
    excluded = _rejected_paths(exclude_from) if exclude_from else []
    with _progress("snapshot") as (bar, task):
        info, created = store.create(
            data_dir,
            tag,
            exclude=excluded,
            progress=lambda stage, done, total: bar.update(
                task, completed=done, total=total, description=stage
            ),
        )
    state = "created" if created else "unchanged (same content)"
    console.print(
        f"snapshot {info.tag} {state}: {info.images} images, {len(info.classes)} classes, "
        f"{info.shards} shards, {info.bytes / 1e6:.1f} MB, content {info.content_hash[:12]}"
    )
    if info.shards_kept:
        console.print(
            f"  {info.shards_kept} of its shards are the last snapshot's, unchanged: "
            "a host holding that one fetches the other "
            f"{info.shards - info.shards_kept}"
        )
    if info.excluded:
        console.print(f"  left out {len(info.excluded)} rejected files (listed in the snapshot)")


def _rejected_paths(report: Path) -> list[str]:
    import json

    try:
        data = json.loads(report.read_text())
        return [str(item["path"]) for item in data["rejected"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise typer.BadParameter(f"{report}: not a validation report ({exc})") from exc


@app.command()
def pull(
    rev: Annotated[str, typer.Option("--rev", help="Snapshot tag; 'latest' for the newest.")],
    out: Annotated[Path, typer.Option("--out", help="Folder to materialise (new or empty).")],
    config: ConfigOpt = None,
) -> None:
    """Materialise a snapshot in OUT, verified against its index's hashes."""
    from rxvision.data.settings import snapshot_store

    store = snapshot_store(_data_config(config, None))
    tag = store.resolve(rev)
    with _progress("pull") as (bar, task):
        info = store.pull(
            tag,
            out,
            progress=lambda stage, done, total: bar.update(
                task, completed=done, total=total, description=stage
            ),
        )
    console.print(f"pulled {info.tag}: {info.images} images verified into {out}")


@app.command("list")
def list_snapshots(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Snapshots with their sizes, class counts and dates."""
    import json
    from dataclasses import asdict

    from rxvision.data.settings import snapshot_store

    infos = snapshot_store(_data_config(config, None)).list_snapshots()
    if as_json:
        typer.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    table = whole_cell_table("tag", "created", "images", "classes", "MB", "shards", "content")
    for i in infos:
        table.add_row(
            i.tag,
            i.created,
            str(i.images),
            str(len(i.classes)),
            f"{i.bytes / 1e6:.1f}",
            str(i.shards),
            i.content_hash[:12],
        )
    Console().print(table)


@app.command()
def preprocess(
    rev: Annotated[str, typer.Option("--rev", help="Snapshot tag ('latest' for the newest).")],
    train_config: Annotated[
        Path | None,
        typer.Option(
            "--train-config",
            help="The training config whose preprocessing contract (data.img_size, "
            "data.localize) the features follow (default: the nightly's, "
            "configs/pipeline.yaml nightly.train_config).",
        ),
    ] = None,
    img_size: Annotated[
        int | None, typer.Option(help="Override the training config's data.img_size, px.")
    ] = None,
    reuse: Annotated[
        bool,
        typer.Option(
            help="Copy the rows of images unchanged since the newest set of this "
            "preprocessing config instead of decoding them again.",
        ),
    ] = True,
    config: ConfigOpt = None,
) -> None:
    """Decode a snapshot once into feature-store shards, as the training config reads them.

    A cache hit does nothing."""
    from dataclasses import replace

    from rxvision.data.feature_store import PreprocessConfig
    from rxvision.data.preprocessing import preprocess_snapshot
    from rxvision.data.settings import feature_store, preprocess_config, snapshot_store
    from rxvision.pipeline.nightly import training_spec
    from rxvision.train.config import load_train_config

    cfg = _data_config(config, None)
    snaps = snapshot_store(cfg)
    tag = snaps.resolve(rev)
    spec = load_train_config(train_config).data.image_spec if train_config else training_spec()
    pre = PreprocessConfig.for_spec(spec, shard_size=preprocess_config(cfg).shard_size)
    if img_size:
        pre = replace(pre, img_size=img_size)
    store = feature_store(cfg)
    with _progress("preprocess") as (bar, task):
        manifest, built = preprocess_snapshot(
            snaps,
            store,
            tag,
            pre,
            workers=cfg.feature_store.workers,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            reuse=reuse,
        )
    reused, in_place = manifest.extra.get("reused", 0), manifest.extra.get("read_in_place", 0)
    state = (
        f"built ({reused} rows reused, {in_place} of them read in place)"
        if built
        else "cache hit (nothing computed)"
    )
    console.print(
        f"features {state}: {manifest.images} images, {pre.spec.describe()}, in "
        f"{store.prefix(manifest.key)}/"
    )

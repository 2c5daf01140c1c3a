"""Immutable dataset snapshots: packed tar shards tracked by DVC, tags in a git registry.

A snapshot of an ImageFolder directory (``DIR/<product>/<image>``) is stored as tar shards
of about 1,000 images plus an ``index.parquet`` (path, label, sha256, size, shard), all
under one DVC-tracked folder, so a pull moves a few large objects instead of one per
image (DVC crawls on many small files). Each snapshot is a git commit with an annotated
tag in the data registry (a bare repo under RXVISION_HOME by default); the DVC remote is
S3 (endpoint from config or ``AWS_ENDPOINT_URL_S3``: SeaweedFS, MinIO and AWS all work).

A tag never moves: the same content under an existing tag is a no-op, other content is
refused. Shards are written deterministically (sorted members, fixed metadata), so the
same members always give the same shard bytes and the same DVC hashes, and a snapshot
keeps the unchanged shards of the one before it: a night that adds 1% new photos adds
~1% new objects, and a host holding last night's snapshot fetches only those.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rxvision.data.earlier_checkouts import earlier_checkouts, shards_verified_before
from rxvision.data.layout import check_class_layout
from rxvision.data.packed_snapshot import INDEX_FILE, SHARDS_DIR, PackedSnapshot
from rxvision.data.pulled_snapshots import mark_used
from rxvision.data.snapshot_publish import (
    publish_directory,
    remove_abandoned_staging,
    staging_prefix,
)
from rxvision.data.snapshot_registry import (
    SnapshotSettings,
    cache_lock,
    configure_dvc_local,
    dvc,
    ensure_registry,
    git,
)
from rxvision.data.snapshot_shards import (
    MARKER_FILE,
    PULLED_INDEX_FILE,
    IndexEntry,
    Progress,
    assign_shards,
    content_hash,
    index_directory,
    read_index,
    write_index,
    write_shards,
)
from rxvision.data.snapshot_unpack import extract_verified
from rxvision.errors import SnapshotError

log = logging.getLogger(__name__)

DATASET_DIR = "dataset"
META_FILE = "snapshot.json"
TAG_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class SnapshotInfo:
    """What a snapshot holds (``snapshot.json`` in its commit)."""

    tag: str
    content_hash: str
    images: int
    bytes: int
    shards: int
    classes: dict[str, int]
    created: str
    excluded: list[str] = field(default_factory=list)
    # shards unchanged from the snapshot before it (the same DVC objects)
    shards_kept: int = 0
    commit: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any], commit: str = "") -> SnapshotInfo:
        """Read a ``snapshot.json``."""
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**{**fields, "commit": commit or data.get("commit", "")})


class SnapshotStore:
    """Create, list and pull snapshots of one data registry."""

    def __init__(self, settings: SnapshotSettings) -> None:
        self.settings = settings
        ensure_registry(settings.registry_url)
        # a pushed tag never moves (atomic pushes, never forced): each is cloned once
        self._infos: dict[str, SnapshotInfo] = {}

    # --- reading the registry -------------------------------------------------------------

    def tags(self) -> list[str]:
        """Snapshot tags, oldest first."""
        out = git("ls-remote", "--tags", "--refs", self.settings.registry_url)
        return [line.split("refs/tags/", 1)[1] for line in out.splitlines() if line]

    def info(self, tag: str) -> SnapshotInfo:
        """The snapshot behind a tag (``SnapshotError`` when there is none)."""
        if tag not in self._infos:
            with tempfile.TemporaryDirectory(prefix="rxv-reg-") as tmp:
                self._infos[tag] = self._read_meta(self._clone(Path(tmp), tag))
        return self._infos[tag]

    def list_snapshots(self) -> list[SnapshotInfo]:
        """Every snapshot, oldest first."""
        if not self.tags():
            return []
        with tempfile.TemporaryDirectory(prefix="rxv-reg-") as tmp:
            work = Path(tmp) / "repo"
            git("clone", "--quiet", "--no-checkout", self.settings.registry_url, str(work))
            infos = []
            for tag in self.tags():
                meta = git("show", f"{tag}:{META_FILE}", cwd=work)
                commit = git("rev-list", "-n", "1", tag, cwd=work)
                infos.append(SnapshotInfo.from_json(json.loads(meta), commit))
        return sorted(infos, key=lambda i: i.created)

    def latest(self) -> str:
        """The newest snapshot's tag."""
        infos = self.list_snapshots()
        if not infos:
            raise SnapshotError(f"no snapshots in {self.settings.registry_url}")
        return infos[-1].tag

    def resolve(self, rev: str) -> str:
        """The tag ``rev`` names: itself, or the newest snapshot's for ``latest``."""
        return self.latest() if rev == "latest" else rev

    def _clone(self, parent: Path, rev: str) -> Path:
        if rev not in self.tags():
            known = ", ".join(self.tags()) or "none"
            raise SnapshotError(f"no snapshot tagged {rev!r} (known: {known})")
        work = parent / "repo"
        git(
            "clone",
            "--quiet",
            "--depth=1",
            f"--branch={rev}",
            self.settings.registry_url,
            str(work),
        )
        return work

    def _read_meta(self, work: Path) -> SnapshotInfo:
        commit = git("rev-parse", "HEAD", cwd=work)
        return SnapshotInfo.from_json(json.loads((work / META_FILE).read_text()), commit)

    # --- create ---------------------------------------------------------------------------

    def create(
        self,
        data_dir: Path,
        tag: str,
        exclude: Iterable[str] = (),
        progress: Progress | None = None,
    ) -> tuple[SnapshotInfo, bool]:
        """Snapshot ``data_dir`` under ``tag``; return its info and whether it is new.

        The same content under an existing tag is a no-op; other content is refused. A
        folder laid out by split (``DIR/<split>/<class>/``) raises ``DataLayoutError``.
        """
        if not TAG_PATTERN.match(tag):
            raise SnapshotError(f"invalid tag {tag!r}: use letters, digits, '.', '_', '-'")
        check_class_layout(Path(data_dir))  # DIR/<split>/<class>/: DataLayoutError
        excluded = sorted(set(exclude))
        entries = index_directory(data_dir, excluded)
        digest = content_hash(entries)
        if tag in self.tags():
            existing = self.info(tag)
            if existing.content_hash == digest:
                log.info("snapshot %s already holds this content: nothing to do", tag)
                return existing, False
            raise SnapshotError(
                f"tag {tag!r} already holds other content ({existing.content_hash[:12]}, "
                f"{existing.images} images; this is {digest[:12]}, {len(entries)} images): "
                "tags never move, choose a new tag"
            )
        with tempfile.TemporaryDirectory(prefix="rxv-snap-") as tmp:
            info = self._commit_snapshot(
                data_dir, tag, entries, digest, excluded, Path(tmp), progress
            )
        return info, True

    def _commit_snapshot(
        self,
        data_dir: Path,
        tag: str,
        entries: list[IndexEntry],
        digest: str,
        excluded: list[str],
        tmp: Path,
        progress: Progress | None,
    ) -> SnapshotInfo:
        work = self._working_copy(tmp)
        entries, kept = assign_shards(entries, self.settings.shard_size, self._last_index(work))
        dataset = work / DATASET_DIR
        shutil.rmtree(dataset, ignore_errors=True)
        entries = write_shards(data_dir, entries, dataset / SHARDS_DIR, progress)
        write_index(entries, dataset / INDEX_FILE)
        classes: dict[str, int] = {}
        for e in entries:
            classes[e.label] = classes.get(e.label, 0) + 1
        info = SnapshotInfo(
            tag=tag,
            content_hash=digest,
            images=len(entries),
            bytes=sum(e.size for e in entries),
            shards=len({e.shard for e in entries}),
            classes=dict(sorted(classes.items())),
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            excluded=excluded,
            shards_kept=kept,
        )
        log.info(
            "snapshot %s: %d shards, %d of them kept from the last snapshot", tag, info.shards, kept
        )
        (work / META_FILE).write_text(json.dumps(asdict(info), indent=2) + "\n")
        with cache_lock(self.settings, exclusive=False):
            dvc(work, self.settings, "add", DATASET_DIR)
            # Data first, then the tag: a tag never names data the remote lacks.
            dvc(work, self.settings, "push", "--jobs", str(self.settings.jobs))
        if progress:
            progress("push", info.images, info.images)
        git("add", f"{DATASET_DIR}.dvc", ".gitignore", META_FILE, cwd=work)
        git(
            "commit",
            "--quiet",
            "-m",
            f"Snapshot {tag}: {info.images} images, {len(classes)} classes, content {digest[:12]}",
            cwd=work,
        )
        git("tag", "-a", tag, "-m", f"dataset snapshot {tag} ({digest})", cwd=work)
        # --atomic: the branch and the tag land together or not at all.
        git(
            "push",
            "--quiet",
            "--atomic",
            "origin",
            "HEAD:refs/heads/main",
            f"refs/tags/{tag}",
            cwd=work,
        )
        return SnapshotInfo.from_json(asdict(info), git("rev-parse", "HEAD", cwd=work))

    def _last_index(self, work: Path) -> list[IndexEntry]:
        """The index of the registry's last snapshot (the working copy's), fetched by DVC
        (from this host's cache when there); empty for the first snapshot, or when it
        cannot be fetched: shards are then cut afresh, which costs bytes, not content."""
        if not (work / f"{DATASET_DIR}.dvc").is_file():
            return []
        try:
            with cache_lock(self.settings, exclusive=False):
                dvc(work, self.settings, "pull", f"{DATASET_DIR}/{INDEX_FILE}")
            return read_index(work / DATASET_DIR / INDEX_FILE)
        # Only the grouping rests on it (every shard is packed from ``data_dir`` and hashed):
        # an index that cannot be read costs bytes, never content.
        except (SnapshotError, OSError, ValueError, TypeError) as exc:
            log.warning(
                "the last snapshot's index could not be read, shards are cut afresh: %s", exc
            )
            return []

    def _working_copy(self, tmp: Path) -> Path:
        work = tmp / "repo"
        git("clone", "--quiet", self.settings.registry_url, str(work))
        git("config", "user.name", "rxvision", cwd=work)
        git("config", "user.email", "rxvision@localhost", cwd=work)
        if not (work / ".dvc").is_dir():
            git("checkout", "--quiet", "-B", "main", cwd=work)
            dvc(work, self.settings, "init")
            dvc(
                work,
                self.settings,
                "remote",
                "add",
                "--default",
                "storage",
                self.settings.remote_url,
            )
            dvc(work, self.settings, "config", "core.autostage", "false")
            git("add", ".dvc", ".dvcignore", cwd=work)
            git("commit", "--quiet", "-m", "Initialise the data registry (DVC on S3)", cwd=work)
        configure_dvc_local(work, self.settings)
        return work

    # --- pull -----------------------------------------------------------------------------

    def pull(self, rev: str, out: Path, progress: Progress | None = None) -> SnapshotInfo:
        """Materialise snapshot ``rev`` in ``out`` (ImageFolder layout), verified by hash.

        Objects already in the local DVC cache are not fetched again (a pull interrupted
        midway resumes), and ``out`` appears only once every file is verified.
        """
        held = self._held(rev, out)
        if held is not None:
            return held
        with tempfile.TemporaryDirectory(prefix="rxv-pull-") as tmp:
            work = self._fetch(Path(tmp), rev)
            info = self._read_meta(work)
            out.parent.mkdir(parents=True, exist_ok=True)
            remove_abandoned_staging(out)
            # Unique per pull: two overlapping runs on one worker must not share (and
            # delete each other's files in) one staging directory.
            staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out), dir=out.parent))
            try:
                packed = PackedSnapshot(work / DATASET_DIR)
                extract_verified(packed, staging, progress)
                shutil.copyfile(packed.dataset / INDEX_FILE, staging / PULLED_INDEX_FILE)
                (staging / MARKER_FILE).write_text(json.dumps(asdict(info), indent=2))
                publish_directory(staging, out, info.tag, info.content_hash)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return info

    def checkout(self, rev: str, out: Path, progress: Progress | None = None) -> SnapshotInfo:
        """Publish snapshot ``rev``'s shards and index at ``out``, every image checked
        against the index's sha256, to be read in place (``PackedSnapshot(out)``): no file
        per image. The shards are hard links into the local DVC cache where the file
        system allows, so a checkout costs no disk beyond the cache. ``out`` appears only
        once verified; one that holds the snapshot already is kept as it is."""
        held = self._held(rev, out)
        if held is not None:
            return held
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_staging(out)
        # beside ``out``: the checkout is moved there by a rename, never copied
        staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out), dir=out.parent))
        try:
            work = self._fetch(staging, rev)
            info = self._read_meta(work)
            packed = PackedSnapshot(work / DATASET_DIR)
            # last night's unchanged shards are the files its checkout verified
            before = shards_verified_before(packed, earlier_checkouts(out))
            packed.verify(progress, record=True, verified=before)
            log.info(
                "%d of %d shards of %s verified by an earlier checkout here: not read again",
                len(before),
                info.shards,
                rev,
            )
            (packed.dataset / MARKER_FILE).write_text(json.dumps(asdict(info), indent=2))
            publish_directory(packed.dataset, out, info.tag, info.content_hash)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return info

    def _held(self, rev: str, out: Path) -> SnapshotInfo | None:
        """The info of ``rev`` when ``out`` holds it already (marked used now); None when
        ``out`` is absent or empty; ``SnapshotError`` when it holds anything else."""
        if not out.exists():
            return None
        marker = out / MARKER_FILE
        if marker.is_file():
            have = SnapshotInfo.from_json(json.loads(marker.read_text()))
            wanted = self.info(rev)
            if have.content_hash == wanted.content_hash:
                log.info("%s already holds snapshot %s", out, rev)
                mark_used(out)
                return wanted
        if any(out.iterdir()):
            raise SnapshotError(f"{out} exists and is not snapshot {rev}: choose another --out")
        return None

    @contextmanager
    def fetched(self, rev: str) -> Iterator[PackedSnapshot]:
        """Snapshot ``rev``'s shards and index, fetched (from the local DVC cache when
        there) into a temporary checkout that lives as long as the context, read in place:
        nothing is unpacked. ``pull`` is this plus writing each image to its own file."""
        with tempfile.TemporaryDirectory(prefix="rxv-fetch-") as tmp:
            yield PackedSnapshot(self._fetch(Path(tmp), rev) / DATASET_DIR)

    def _fetch(self, parent: Path, rev: str) -> Path:
        work = self._clone(parent, rev)
        configure_dvc_local(work, self.settings)
        with cache_lock(self.settings, exclusive=False):
            dvc(work, self.settings, "pull", "--jobs", str(self.settings.jobs))
        if self.settings.keep_only_latest:
            with cache_lock(self.settings, exclusive=True):
                # the workspace is this snapshot: every other object leaves the cache
                dvc(work, self.settings, "gc", "--workspace", "--force")
        return work


def pulled_digests(out: Path) -> dict[str, str]:
    """The sha256 of each image of the snapshot pulled into ``out``, by relative path (the
    index kept beside its marker; empty for a folder pulled before the index was kept)."""
    index = out / PULLED_INDEX_FILE
    return {e.path: e.sha256 for e in read_index(index)} if index.is_file() else {}

"""Known facts: files inspected before (same bytes, same limits) are not decoded again,
while the policy and the cross-file criteria are judged again on every run."""

from __future__ import annotations

import hashlib
import os
import signal
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path, PurePosixPath

import pytest

from rxvision.data.decode import CORRUPT, DecodeLimits, FileFacts, FileTask, inspect_file
from rxvision.data.validation import DataValidator, ValidationPolicy, known_facts
from rxvision.data.validation.known_facts import KnownFacts, facts_key
from rxvision.data.validation.scan import file_suffix

pytestmark = pytest.mark.unit


def crashing_inspect(task: FileTask, limits: DecodeLimits) -> FileFacts:
    """inspect_file, except that a file named crash-* kills the decoder process."""
    if Path(task.key).name.startswith("crash"):
        os.kill(os.getpid(), signal.SIGSEGV)
    return inspect_file(task, limits)


def digests_of(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*.jpg")
    }


def test_known_files_are_not_decoded_again_and_the_policy_is_judged_again(
    good_dataset: Callable[..., Path],
) -> None:
    root = good_dataset(classes=2, per_class=4)
    (root / "class-0" / "img-000.jpg").rename(root / "class-0" / "crash-0.jpg")
    known = KnownFacts()
    first = DataValidator(workers=0).validate_dataset(root, digests_of(root), known)
    assert first.ok and len(first.accepted) == 8 and len(known) == 8 and known.reused == 0
    # the next run: a new file that would crash its decoder, a policy that wants 300 px
    (root / "class-1" / "crash-new.jpg").write_bytes(
        (root / "class-0" / "crash-0.jpg").read_bytes()
    )
    (root / "class-1" / "crash-new.jpg").open("ab").write(b"\0")  # other bytes, same image
    again = KnownFacts.from_parquet(known.to_parquet())
    validator = DataValidator(
        ValidationPolicy(min_width=300, min_height=300), workers=2, inspect=crashing_inspect
    )
    result = validator.validate_dataset(root, digests_of(root), again)
    codes = {issue.path: issue.code for issue in result.rejected}
    # the known crash-0.jpg was not decoded (no crash); the new file was
    assert codes.pop("class-1/crash-new.jpg") == "decoder_crash"
    assert codes == {key: "too_small" for key in digests_of(root) if key != "class-1/crash-new.jpg"}
    assert again.reused == 8


def test_only_fully_decoded_files_are_kept_and_a_cache_never_outgrows_its_dataset() -> None:
    known = KnownFacts()
    good = FileFacts("a.jpg", 10, "aa", "JPEG", "RGB", 224, 224, 8, None)
    known.add(good)
    known.add(FileFacts("b.jpg", 10, "bb", code=CORRUPT, message="truncated"))
    assert len(known) == 1
    assert known.lookup("aa", "c/d.jpg") == FileFacts(
        "c/d.jpg", 10, "aa", "JPEG", "RGB", 224, 224, 8
    )
    assert known.lookup("bb", "b.jpg") is None and known.reused == 1
    known.add(FileFacts("e.jpg", 5, "ee", "PNG", "RGB", 300, 300, 8, 6))
    kept = KnownFacts.from_parquet(known.kept(["ee", "zz"]).to_parquet())
    assert len(kept) == 1 and kept.lookup("ee", "e.jpg") == FileFacts(
        "e.jpg", 5, "ee", "PNG", "RGB", 300, 300, 8, 6
    )
    with pytest.raises(ValueError, match="not a Parquet file of known facts"):
        KnownFacts.from_parquet(b"not parquet")


def test_facts_read_back_whole_across_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    known = KnownFacts()
    for n in range(5):
        known.add(FileFacts(f"{n}.jpg", 10 + n, f"{n:x}" * 64, "JPEG", "RGB", 224, 224 + n, 8))
    monkeypatch.setattr(known_facts, "FACTS_BATCH", 2)  # 5 rows: 3 batches
    again = KnownFacts.from_parquet(known.to_parquet())
    for n in range(5):
        assert again.lookup(f"{n:x}" * 64, "x.jpg") == FileFacts(
            "x.jpg", 10 + n, f"{n:x}" * 64, "JPEG", "RGB", 224, 224 + n, 8
        )


def test_facts_found_under_other_limits_are_another_cache() -> None:
    assert facts_key(DecodeLimits()) == facts_key(DecodeLimits())
    assert facts_key(DecodeLimits()) != facts_key(DecodeLimits(max_pixels=1_000_000))


def test_a_lookup_gives_every_fact_under_the_files_own_key() -> None:
    # every field set (a field added later gets a value here too): with_key drops none
    values = {
        f.name: (7 if f.type in ("int", "int | None") else f"v-{f.name}") for f in fields(FileFacts)
    }
    stored = FileFacts(**{**values, "key": "", "code": None})
    known = KnownFacts({stored.sha256 or "": stored})
    found = known.lookup(stored.sha256 or "", "amlo/img-1.jpg")
    assert found == replace(stored, key="amlo/img-1.jpg") and known.reused == 1
    # kept as it is when the same bytes are found again, under any key
    known.add(replace(stored, key="other/copy.jpg"))
    assert known.lookup(stored.sha256 or "", "x.jpg") == replace(stored, key="x.jpg")


@pytest.mark.parametrize(
    ("key", "suffix"),
    [
        ("a/b.JPG", ".jpg"),
        ("a/b.tar.gz", ".gz"),
        ("a/.jpg", ""),
        ("a/b.", ""),
        ("a.b/c", ""),
        ("a/...jpg", ".jpg"),
        ("noext", ""),
    ],
)
def test_a_files_extension_follows_pathlibs_rule(key: str, suffix: str) -> None:
    assert file_suffix(key) == suffix == PurePosixPath(key).suffix.lower()

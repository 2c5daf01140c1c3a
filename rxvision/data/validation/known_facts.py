"""Facts of files already inspected, by content: a file whose sha256 was decoded fully
before (under the same limits) is not read and decoded again.

A nightly snapshot is mostly last night's files. What ``inspect_file`` finds of a file
(format, mode, size, bit depth, EXIF orientation) depends on its bytes and the decode
limits alone, so those facts are kept by sha256 and reused; the checks against the
policy and every criterion across files are judged again on every run. Only files that
decoded fully are kept: a failure is inspected again each time (rare, and it may have
been a timeout on a busy worker).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import asdict, fields

import pyarrow as pa
import pyarrow.parquet as pq

from rxvision.data.decode import DecodeLimits, FileFacts

# Bump when inspect_file finds other facts for the same bytes: older caches then miss.
FACTS_VERSION = 1
_COLUMNS = [f.name for f in fields(FileFacts) if f.name not in {"key", "code", "message"}]
# rows read at a time (memory: one batch's Arrow buffers, not the table's)
FACTS_BATCH = 8192


def facts_key(limits: DecodeLimits) -> str:
    """The name of the cache that holds facts found under ``limits``."""
    payload = json.dumps({"v": FACTS_VERSION, "limits": asdict(limits)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class KnownFacts:
    """Facts of fully decoded files by sha256; ``add`` keeps what a scan found."""

    def __init__(self, facts: dict[str, FileFacts] | None = None) -> None:
        self._facts = dict(facts or {})
        self.reused = 0

    def __len__(self) -> int:
        return len(self._facts)

    def __contains__(self, sha256: object) -> bool:
        return sha256 in self._facts

    def lookup(self, sha256: str, key: str) -> FileFacts | None:
        """The facts of the file ``key`` whose bytes hash to ``sha256``, if known."""
        found = self._facts.get(sha256)
        if found is None:
            return None
        self.reused += 1
        return found.with_key(key)

    def add(self, facts: FileFacts) -> None:
        """Keep ``facts`` when its file decoded fully (the same bytes give the same facts:
        facts known already are kept as they are)."""
        if facts.code is None and facts.sha256 and facts.sha256 not in self._facts:
            self._facts[facts.sha256] = facts.with_key("")

    def kept(self, sha256s: Iterable[str]) -> KnownFacts:
        """Only the facts of ``sha256s`` (a dataset's files: a cache never outgrows it)."""
        return KnownFacts({d: self._facts[d] for d in set(sha256s) if d in self._facts})

    def to_parquet(self) -> bytes:
        """The facts as a Parquet file (one row per sha256)."""
        facts = list(self._facts.values())
        # column by column: a dict per row was 0.5 s of a 100,000-file night
        columns = {name: [getattr(f, name) for f in facts] for name in _COLUMNS}
        table = pa.Table.from_pydict(columns, schema=_schema())
        buf = io.BytesIO()
        pq.write_table(table, buf)
        return buf.getvalue()

    @classmethod
    def from_parquet(cls, data: bytes) -> KnownFacts:
        """Facts written by ``to_parquet``."""
        known: dict[str, FileFacts] = {}
        try:
            parquet = pq.ParquetFile(io.BytesIO(data))
            names = parquet.schema_arrow.names
            if names != _COLUMNS:
                raise ValueError(f"known facts with columns {names}, not {_COLUMNS}")
            # batch by batch, column by column: a whole table and a dict per row held a
            # 100,000-file night's facts several times over (as the snapshot index did)
            for batch in parquet.iter_batches(batch_size=FACTS_BATCH):
                columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
                for row in zip(*columns, strict=True):
                    # positional: _COLUMNS are FileFacts' fields after ``key``, in order
                    facts = FileFacts("", *row)
                    if facts.sha256:
                        known[facts.sha256] = facts
        except pa.ArrowException as exc:
            raise ValueError(f"not a Parquet file of known facts: {exc}") from exc
        return cls(known)


def _schema() -> pa.Schema:
    types = {"size_bytes": pa.int64(), "width": pa.int64(), "height": pa.int64()}
    types |= {"bits": pa.int64(), "orientation": pa.int64()}
    return pa.schema([(name, types.get(name, pa.string())) for name in _COLUMNS])

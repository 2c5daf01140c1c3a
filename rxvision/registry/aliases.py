"""The roles of a registered model's versions, as MLflow aliases (never the deprecated
stages): a new version is the ``challenger``; ``promote`` makes it the ``champion`` and the
previous champion the ``fallback``; ``rollback`` makes the fallback the champion again.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from rxvision.errors import NotFound, RxVisionError
from rxvision.registry.config import AliasNames
from rxvision.registry.lineage import TAG_PREFIX

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """One registered version as ``list`` shows it."""

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    source: str
    created_ms: int
    tags: dict[str, str]

    @property
    def uri(self) -> str:
        """``models:/name/version``."""
        return f"models:/{self.name}/{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {**asdict(self), "aliases": list(self.aliases), "uri": self.uri}


@dataclass(frozen=True)
class AliasChange:
    """What ``promote`` or ``rollback`` did."""

    champion: str
    previous_champion: str | None
    fallback: str | None
    changed: bool


class Unset(enum.Enum):
    """ "Not given", where None means "no champion" (``expected_champion``)."""

    UNSET = "UNSET"


UNSET = Unset.UNSET


class ChampionChanged(RxVisionError):
    """The champion alias is not what the caller judged against (or another writer moved
    it during a promotion); for a refused compare-and-set nothing was moved."""

    exit_code = 10  # 1-9 are taken (rxvision.errors, gates, serving, scoring)

    def __init__(self, name: str, expected: str | None, actual: str | None, what: str) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{name}: champion is {_label(actual)}, expected {_label(expected)}: {what}"
        )


def _label(version: str | None) -> str:
    return "none" if version is None else f"v{version}"


class AliasRoles:
    """Reads and moves the role aliases of the registered model ``name``."""

    def __init__(self, client: MlflowClient, name: str, names: AliasNames) -> None:
        self.client = client
        self.name = name
        self.names = names

    def get_alias(self, alias: str) -> VersionInfo | None:
        """The version an alias points at, or None."""
        try:
            version = self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return None
            raise
        return self._info(version, self._aliases())

    def promote(
        self, version: str | None = None, *, expected_champion: str | Unset | None = UNSET
    ) -> AliasChange:
        """Make ``version`` (default: the challenger) the champion; the old one the fallback.

        Compare-and-set: with ``expected_champion`` (a version, or None for "there must be
        no champion"; e.g. ``last_champion_version``, the champion the gates compared
        against), the champion alias is read again right before anything moves, and
        ``ChampionChanged`` is raised, with nothing moved, when it is another version.
        Promoting the version that already is the champion changes nothing and raises
        nothing (a retried promotion). After the move the champion alias is read back;
        another version there raises ``ChampionChanged`` too (a concurrent writer).

        MLflow has no atomic compare-and-set of an alias: between the check and the set
        (two calls) another writer can still move the alias, and the later write wins.
        The read-back catches a writer that wrote after this one; this is the best a
        client can do without a lock on the tracking server.
        """
        aliases = self.names
        target = version or self.alias_version(aliases.challenger)
        if target is None:
            raise NotFound(f"{self.name} has no {aliases.challenger!r} version to promote")
        self._check_version(target)
        now = self._aliases()
        current, fallback = now.get(aliases.champion), now.get(aliases.fallback)
        if current == target:
            return AliasChange(target, current, fallback, changed=False)
        if expected_champion is not UNSET and current != expected_champion:
            raise ChampionChanged(
                self.name,
                expected_champion,
                current,
                f"refusing to promote v{target} over a champion it was not compared "
                "with; nothing was moved",
            )
        if current is not None:
            # fallback first: at every instant the champion alias points at a usable model
            self.client.set_registered_model_alias(self.name, aliases.fallback, current)
            fallback = current
        self.client.set_registered_model_alias(self.name, aliases.champion, target)
        actual = self.alias_version(aliases.champion)
        if actual != target:
            raise ChampionChanged(
                self.name,
                target,
                actual,
                f"another writer moved the champion while v{target} was being promoted "
                f"(fallback is now v{fallback}); check the aliases",
            )
        if self.alias_version(aliases.challenger) == target:
            self.client.delete_registered_model_alias(self.name, aliases.challenger)
        self.client.set_model_version_tag(self.name, target, f"{TAG_PREFIX}promoted_at", _now())
        log.info("%s: champion v%s (was %s), fallback %s", self.name, target, current, fallback)
        return AliasChange(target, current, fallback, changed=True)

    def rollback(self) -> AliasChange:
        """Make the fallback the champion again; the rolled-back version loses its alias."""
        aliases = self.names
        fallback = self.alias_version(aliases.fallback)
        if fallback is None:
            raise NotFound(f"{self.name} has no {aliases.fallback!r} version to roll back to")
        current = self.alias_version(aliases.champion)
        self.client.set_registered_model_alias(self.name, aliases.champion, fallback)
        self.client.delete_registered_model_alias(self.name, aliases.fallback)
        if current is not None and current != fallback:
            self.client.set_model_version_tag(
                self.name, current, f"{TAG_PREFIX}rolled_back_at", _now()
            )
        log.warning("%s: rolled back champion v%s -> v%s", self.name, current, fallback)
        return AliasChange(fallback, current, None, changed=current != fallback)

    def list_versions(self) -> list[VersionInfo]:
        """Every version, newest first, with its aliases."""
        try:
            found = self.client.search_model_versions(f"name = '{self.name}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return []
            raise
        aliases = self._aliases()
        infos = [self._info(v, aliases) for v in found]
        return sorted(infos, key=lambda i: int(i.version), reverse=True)

    def _aliases(self) -> dict[str, str]:
        try:
            return {
                k: str(v) for k, v in self.client.get_registered_model(self.name).aliases.items()
            }
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def alias_version(self, alias: str) -> str | None:
        """The version ``alias`` points at, or None."""
        return self._aliases().get(alias)

    def _check_version(self, version: str) -> None:
        try:
            self.client.get_model_version(self.name, version)
        except MlflowException as exc:
            raise NotFound(f"{self.name} has no version {version!r}") from exc

    def _info(self, version: ModelVersion, aliases: Mapping[str, str]) -> VersionInfo:
        number = str(version.version)
        return VersionInfo(
            name=self.name,
            version=number,
            aliases=tuple(sorted(a for a, v in aliases.items() if v == number)),
            run_id=version.run_id,
            source=str(version.source),
            created_ms=int(version.creation_timestamp or 0),
            tags=dict(version.tags or {}),
        )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

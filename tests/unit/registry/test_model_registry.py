"""The registry's judgement against the champion and its compare-and-set promotion, on
an in-memory MLflow client (no server)."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from rxvision.registry.aliases import ChampionChanged
from rxvision.registry.config import RegistryConfig
from rxvision.registry.gates import ModelQualityError
from rxvision.registry.model_registry import ModelRegistry

pytestmark = pytest.mark.unit


NAME = "pills"
CLASSES = ("ndc-1", "ndc-2")
PARAMS = {"data.val_fraction": "0.2", "data.split_seed": "0", "model.architecture": "r18"}


def _missing(what: str) -> MlflowException:
    return MlflowException(what, error_code=RESOURCE_DOES_NOT_EXIST)


class FakeClient:
    """The MlflowClient calls ModelRegistry makes, in memory; ``after_set_alias`` lets a
    test play another writer."""

    tracking_uri = "memory://"

    def __init__(self) -> None:
        self.versions: dict[str, SimpleNamespace] = {}
        self.aliases: dict[str, str] = {}
        self.runs: dict[str, SimpleNamespace] = {}
        self.alias_writes: list[tuple[str, str]] = []
        self.after_set_alias: Callable[[str, str], None] | None = None

    def add_run(self, run_id: str, content_hash: str = "c0ffee") -> str:
        tags = {"rxvision.run_id": run_id, "dataset.content_hash": content_hash}
        data = SimpleNamespace(tags=tags, params=dict(PARAMS), metrics={})
        self.runs[run_id] = SimpleNamespace(data=data, info=SimpleNamespace(experiment_id="1"))
        return f"models:/m-{run_id}"

    def get_logged_model(self, model_id: str) -> Any:
        return SimpleNamespace(source_run_id=model_id.removeprefix("m-"), artifact_location="x")

    def get_run(self, run_id: str) -> Any:
        return self.runs[run_id]

    def search_model_versions(self, query: str) -> list[Any]:
        run = query.split("run_id = '")[1].rstrip("'") if "run_id" in query else None
        return [v for v in self.versions.values() if run is None or v.run_id == run]

    def create_registered_model(self, name: str) -> None:
        pass

    def create_model_version(self, name: str, source: str, **kw: Any) -> Any:
        number = str(len(self.versions) + 1)
        self.versions[number] = SimpleNamespace(
            version=number,
            run_id=kw["run_id"],
            source=source,
            creation_timestamp=0,
            tags=dict(kw["tags"]),
        )
        return self.versions[number]

    def get_model_version(self, name: str, version: str) -> Any:
        if version not in self.versions:
            raise _missing(f"no version {version}")
        return self.versions[version]

    def get_model_version_by_alias(self, name: str, alias: str) -> Any:
        if alias not in self.aliases:
            raise _missing(f"no alias {alias}")
        return self.versions[self.aliases[alias]]

    def get_registered_model(self, name: str) -> Any:
        return SimpleNamespace(aliases=dict(self.aliases))

    def set_registered_model_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[alias] = str(version)
        self.alias_writes.append((alias, str(version)))
        if self.after_set_alias is not None:
            self.after_set_alias(alias, str(version))

    def delete_registered_model_alias(self, name: str, alias: str) -> None:
        self.aliases.pop(alias, None)

    def set_model_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self.versions[version].tags[key] = value


def good(top1: float = 0.93) -> dict[str, float]:
    return {"test_top1": top1, "test_ece": 0.04, **{f"test_recall_{c}": 0.9 for c in CLASSES}}


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def registry(fake: FakeClient) -> ModelRegistry:
    return ModelRegistry(RegistryConfig(model_name=NAME), client=fake)  # type: ignore[arg-type]


def _champion(registry: ModelRegistry, fake: FakeClient, top1: float = 0.95) -> str:
    version = registry.register_model(fake.add_run("champ"), good(top1), classes=CLASSES)
    registry.promote(version)
    return version


def test_a_challenger_worse_on_the_comparators_images_is_refused(
    registry: ModelRegistry, fake: FakeClient
) -> None:
    v1 = _champion(registry, fake)
    challenger = fake.add_run("chal")
    scores = {f"models:/{NAME}/{v1}": 0.95, challenger: 0.80}
    calls: list[str] = []

    def comparator(uri: str) -> dict[str, float]:
        calls.append(uri)
        return {"test_top1": scores[uri], "images": 120}

    # its own test metrics (0.99) would beat the champion's registered 0.95
    with pytest.raises(ModelQualityError) as caught:
        registry.register_model(challenger, good(0.99), comparator=comparator, classes=CLASSES)
    assert calls == [f"models:/{NAME}/{v1}", challenger]  # the champion pinned, then this
    assert "champion v1 top-1 0.9500 vs this model 0.8000 on 120 test images" in str(caught.value)
    assert registry.last_champion_version == v1
    assert len(fake.versions) == 1  # nothing registered

    scores[challenger] = 0.96
    v2 = registry.register_model(challenger, good(0.99), comparator=comparator, classes=CLASSES)
    assert fake.versions[v2].tags["rxvision.gate.champion_version"] == v1
    assert "vs this model 0.9600 on 120" in registry.last_report.criteria[-1].detail  # type: ignore[union-attr]


def test_a_failing_comparator_fails_the_gate(registry: ModelRegistry, fake: FakeClient) -> None:
    _champion(registry, fake)

    def broken(uri: str) -> dict[str, float]:
        raise FileNotFoundError(f"no test images for {uri}")

    with pytest.raises(ModelQualityError, match=r"could not be compared: FileNotFoundError"):
        registry.register_model(fake.add_run("c"), good(), comparator=broken, classes=CLASSES)


def test_without_a_comparator_a_champion_on_another_split_fails(
    registry: ModelRegistry, fake: FakeClient
) -> None:
    _champion(registry, fake)
    other_data = fake.add_run("other", content_hash="beef")
    with pytest.raises(ModelQualityError, match=r"max_top1_regression: .*not comparable"):
        registry.register_model(other_data, good(0.99), classes=CLASSES)
    # same split: the registered top-1s compare
    assert registry.register_model(fake.add_run("same"), good(0.95), classes=CLASSES) == "2"


def test_a_class_without_test_images_is_refused_by_name(
    registry: ModelRegistry, fake: FakeClient
) -> None:
    summary = {
        "model_uri": fake.add_run("r"),
        "metrics": good(),
        "classes": [*CLASSES, "ndc-3 (new)"],
    }
    with pytest.raises(ModelQualityError, match=r"no test image of: ndc-3 \(new\)"):
        registry.register_summary(summary)
    assert not fake.versions


def test_promote_with_a_stale_expected_champion_moves_nothing(
    registry: ModelRegistry, fake: FakeClient
) -> None:
    v1 = _champion(registry, fake)
    v2 = registry.register_model(fake.add_run("c"), good(0.96), classes=CLASSES)
    before = dict(fake.aliases)
    assert before == {"champion": v1, "challenger": v2}
    for stale in (None, "7"):
        with pytest.raises(ChampionChanged) as caught:
            registry.promote(v2, expected_champion=stale)
        assert caught.value.expected == stale and caught.value.actual == v1
        assert f"champion is v{v1}" in str(caught.value)
        assert caught.value.exit_code == 10
        assert fake.aliases == before
    change = registry.promote(expected_champion=registry.last_champion_version)
    assert (change.champion, change.previous_champion, change.fallback) == (v2, v1, v1)
    assert fake.aliases == {"champion": v2, "fallback": v1}
    # a retried promotion of the champion is a no-op, whatever it expected
    assert registry.promote(v2, expected_champion=v1).changed is False


def test_promote_expecting_no_champion(registry: ModelRegistry, fake: FakeClient) -> None:
    v1 = registry.register_model(fake.add_run("a"), good(), classes=CLASSES)
    assert registry.last_champion_version is None
    assert registry.promote(expected_champion=None).champion == v1
    # the same run again: its version, and the champion it was judged against (none)
    registry.last_champion_version = "x"
    assert registry.register_model(fake.add_run("a"), good(), classes=CLASSES) == v1
    assert registry.last_champion_version is None


def test_promote_detects_a_writer_racing_the_champion_alias(
    registry: ModelRegistry, fake: FakeClient
) -> None:
    v1 = _champion(registry, fake)
    v2 = registry.register_model(fake.add_run("b"), good(0.96), classes=CLASSES)
    v3 = registry.register_model(fake.add_run("c"), good(0.97), classes=CLASSES)

    def other_writer(alias: str, version: str) -> None:
        if alias == "champion" and version == v2:
            fake.after_set_alias = None
            fake.aliases["champion"] = v3  # another promotion lands right after ours

    fake.after_set_alias = other_writer
    with pytest.raises(ChampionChanged, match=rf"champion is v{v3}, expected v{v2}"):
        registry.promote(v2, expected_champion=v1)
    assert fake.aliases["champion"] == v3

"""Fixtures: synthesized apps, shared by every test of the session (each in-process
synth costs a few seconds of jsii)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

# jsii starts Node when aws_cdk is first imported: silence its Node 20 end-of-life banner
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

import pytest
from support import Synth


@pytest.fixture(scope="session")
def synth() -> Callable[..., Synth]:
    """Synthesize with extra context, memoized per context."""
    cache: dict[str, Synth] = {}

    def make(**context: Any) -> Synth:
        key = json.dumps(context, sort_keys=True)
        if key not in cache:
            cache[key] = Synth(context)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def default(synth: Callable[..., Synth]) -> Synth:
    """The app as ``cdk synth`` builds it with no flags."""
    return synth()


@pytest.fixture(scope="session")
def with_mwaa(synth: Callable[..., Synth]) -> Synth:
    """The app with ``-c mwaa=true``."""
    return synth(mwaa="true")

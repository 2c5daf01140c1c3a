"""The CLI's log lines: a library's chatter (botocore's "Found credentials in environment
variables." once per client) stays out of a user's terminal unless --verbose asks."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from rxvision.cli.main import QUIET_LOGGERS, configure_logging

pytestmark = pytest.mark.unit


@pytest.fixture
def restore_levels() -> Iterator[None]:
    names = ("", *QUIET_LOGGERS)
    levels = {name: logging.getLogger(name).level for name in names}
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.usefixtures("restore_levels")
def test_botocores_credential_lines_are_quiet_and_ours_are_not() -> None:
    logging.getLogger().setLevel(logging.INFO)
    configure_logging(verbose=False)
    assert not logging.getLogger("botocore.credentials").isEnabledFor(logging.INFO)
    assert logging.getLogger("botocore.credentials").isEnabledFor(logging.WARNING)
    assert logging.getLogger("rxvision.data.synth.generate").isEnabledFor(logging.INFO)


@pytest.mark.usefixtures("restore_levels")
def test_verbose_shows_them_again() -> None:
    configure_logging(verbose=False)
    logging.getLogger().setLevel(logging.DEBUG)  # what --verbose's basicConfig sets first
    configure_logging(verbose=True)
    assert logging.getLogger("botocore.credentials").isEnabledFor(logging.DEBUG)

"""Where the nightly keeps the facts of the files it inspected: beside the validation
reports in S3, one object per set of decode limits, so that the next night decodes only
its new files (``rxvision.data.validation.known_facts``)."""

from __future__ import annotations

import logging

from rxvision.data.decode import DecodeLimits
from rxvision.data.validation.known_facts import KnownFacts, facts_key
from rxvision.data.validation.policy import ValidationPolicy
from rxvision.errors import NotFound
from rxvision.storage.s3 import S3Store

log = logging.getLogger(__name__)


def known_facts_uri(report_uri: str, policy: ValidationPolicy) -> str:
    """Where the facts of inspected files are kept: beside the reports, one object per
    set of decode limits."""
    limits = DecodeLimits(max_pixels=policy.max_pixels, max_file_bytes=policy.max_file_bytes)
    return f"{report_uri.rsplit('/', 1)[0]}/_facts/{facts_key(limits)}.parquet"


def read_known_facts(uri: str, s3: S3Store | None = None) -> KnownFacts:
    """The facts kept at ``uri``; none when there are none or they cannot be read (the
    files are then inspected again, and the facts written anew)."""
    try:
        return KnownFacts.from_parquet((s3 or S3Store()).get_bytes(uri))
    except NotFound:
        return KnownFacts()
    except ValueError as exc:
        log.warning("known facts at %s unreadable (%s): inspecting every file", uri, exc)
        return KnownFacts()

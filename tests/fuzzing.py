"""How many cases a fuzz test runs: a short run in CI, a long one by a documented command.

Every property test over hostile input (frames, handshakes, records, certificates) takes its
case count from ``examples(n)`` and carries the ``fuzz`` marker. ``n`` is the short run CI
makes; ``XIO_FUZZ_EXAMPLES=100000`` makes every such test run that many cases instead:

    XIO_FUZZ_EXAMPLES=100000 .venv/bin/python -m pytest -m fuzz -q

(README, "Fuzzing"; the result of a long run is recorded in bench/RESULTS.md.)
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

#: Set to run every fuzz test this many cases.
ENV = "XIO_FUZZ_EXAMPLES"


def examples(short: int) -> int:
    """Return the case count: ``short`` unless the long run asks for more."""
    wanted = os.environ.get(ENV)
    return int(wanted) if wanted else short


def fuzz(short: int, **options):
    """Decorate a hypothesis test as a fuzz test of ``short`` cases in CI."""
    checks = [HealthCheck.too_slow, *options.pop("suppress_health_check", ())]
    configured = settings(max_examples=examples(short), deadline=None,
                          suppress_health_check=checks, **options)  # fmt: skip

    def decorate(test):
        return pytest.mark.fuzz(configured(test))

    return decorate

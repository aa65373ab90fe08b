"""CARSEARCH_REQUIRE_ALL=1 (.ci/run sets it): a skipped test is a failure.

Without the TORCS car models, the system Chromium, the dashcam fixtures (../shared/fixtures/dashcam),
torchrun or Ray, the tests that need them skip, and a run that skipped a third of the browser and
render tests still passed. Where everything must be there (CI), every skip (a `skipif` mark,
`pytest.skip`, `pytest.importorskip`, in a test, a fixture or at import) becomes a failure that
names what was missing. `xfail` is not a skip and stays as it is. tests/conftest.py registers this
module as a plugin in every process (xdist workers too) when the variable is set.
"""

from __future__ import annotations

import os

import pytest

ENV = "CARSEARCH_REQUIRE_ALL"


def enabled() -> bool:
    return os.environ.get(ENV, "").strip() not in ("", "0")


def _fail(rep) -> None:
    reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
    rep.outcome = "failed"
    rep.longrepr = f"{ENV}=1: this skip is a failure (the environment lacks what the test needs): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.skipped and not hasattr(rep, "wasxfail"):
        _fail(rep)
    return rep


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(collector):
    rep = yield
    if rep.skipped:  # pytest.importorskip / pytest.skip(allow_module_level=True) at import
        _fail(rep)
    return rep

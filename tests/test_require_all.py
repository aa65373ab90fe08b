"""CARSEARCH_REQUIRE_ALL=1 (tests/require_all.py, set by .ci/run) turns every skip into a failure
that names what was missing; without it a skip stays a skip. A small suite in a scratch folder, run
the way `make test` runs the real one (pytest-xdist)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent

CONFTEST = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
import pytest
import require_all

def pytest_configure(config):
    if require_all.enabled():
        config.pluginmanager.register(require_all, "carsearch-require-all")

@pytest.fixture
def chromium():
    pytest.skip("no system Chromium for the browser tests")
"""

SUITE = """
import pytest

def test_runs():
    assert True

@pytest.mark.skipif(True, reason="torcs-data not fetched")
def test_needs_torcs():
    pass

def test_needs_chromium(chromium):
    pass

def test_needs_photos():
    pytest.skip("../shared/fixtures/dashcam not present")

def test_needs_a_module():
    pytest.importorskip("carsearch_no_such_module")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""

AT_IMPORT = """
import pytest
pytest.importorskip("carsearch_no_such_module")

def test_never_collected():
    pass
"""


def _run(tmp_path: Path, files: dict[str, str], require: str | None, *args: str) -> subprocess.CompletedProcess:
    root = tmp_path / f"suite-{require}-{len(files)}"
    root.mkdir()
    (root / "conftest.py").write_text(CONFTEST)
    for name, text in files.items():
        (root / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "CARSEARCH_"))}
    if require is not None:
        env["CARSEARCH_REQUIRE_ALL"] = require
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "--rootdir", str(root)]
    return subprocess.run(
        [*cmd, *args, str(root)], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_skips_stay_skips_without_the_switch(tmp_path):
    p = _run(tmp_path, {"test_suite.py": SUITE}, "0")
    assert p.returncode == 0 and "1 passed, 4 skipped, 1 xfailed" in p.stdout, p.stdout


def test_require_all_turns_every_skip_into_a_failure_naming_what_is_missing(tmp_path):
    p = _run(tmp_path, {"test_suite.py": SUITE}, "1", "-n", "2")  # as `make test` runs: xdist workers
    assert p.returncode == 1, p.stdout
    # skipif and the fixture skip happen in setup (errors), the others in the test (failures)
    assert "2 failed, 1 passed, 1 xfailed, 2 errors" in p.stdout, p.stdout
    for missing in (
        "torcs-data not fetched",
        "no system Chromium",
        "../shared/fixtures/dashcam not present",
        "could not import 'carsearch_no_such_module'",
    ):
        assert (
            "CARSEARCH_REQUIRE_ALL=1: this skip is a failure (the environment lacks what the test needs): "
            in (p.stdout)
            and missing in p.stdout
        ), (missing, p.stdout)
    p = _run(tmp_path, {"test_suite.py": SUITE, "test_at_import.py": AT_IMPORT}, "1")
    assert p.returncode != 0 and "could not import 'carsearch_no_such_module'" in p.stdout, p.stdout

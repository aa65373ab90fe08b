"""benchmarks/bench_serve.py measures search, not refusals: its server runs with the bench's own
settings (no per-address upload limit: all its clients are 127.0.0.1), and a run whose phase has
no request or more than 1 % errors fails with a line that says which phase and why."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from _serve_helpers import SETTINGS, Server, shared_repo

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "benchmarks" / "bench_serve.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _phase(name, requests, errors, first=None):
    return {"phase": name, "requests": requests, "errors": errors, "first_error": first}


def test_error_accounting_fails_past_one_percent(bench):
    ok = [_phase("text, new queries", 1000, 0), _phase("image upload", 1000, 10)]  # 1.0 %: still a measurement
    assert bench.check(ok) == []
    bad = bench.check(
        [*ok, _phase("image upload", 9679, 9649, "429: over 30 uploads a minute"), _phase("text, repeated", 0, 0)]
    )
    assert bad == [
        "image upload: 9649 of 9679 requests failed (99.7% > 1%), first: 429: over 30 uploads a minute",
        "text, repeated: no request completed",
    ]
    assert bench.check([_phase("image upload", 1000, 11)])[0].startswith("image upload: 11 of 1000 requests failed")


def test_a_failing_run_exits_non_zero_with_the_reason(bench, tmp_path):
    """The exit path main() takes, in a fresh interpreter: status 1 and the phase on stderr."""
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('b', {str(REPO / 'benchmarks/bench_serve.py')!r})\n"
        "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)\n"
        "bad = b.check([{'phase': 'image upload', 'requests': 200, 'errors': 150, 'first_error': '429'}])\n"
        "raise SystemExit('bench_serve: FAILED, these figures do not measure search:\\n  ' + '\\n  '.join(bad))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 1 and "image upload: 150 of 200 requests failed (75.0% > 1%)" in r.stderr


def _uploads(bench, url: str, image: bytes) -> dict:
    async def upload(http, i):
        return await http.post(
            "/api/v1/search/image", files={"image": ("q.jpg", image, "image/jpeg")}, data={"limit": "5"}
        )

    return asyncio.run(bench.phase("image upload", url, 4, 120.0, upload))  # ends at bench.MAX_REQUESTS


def test_the_benchs_server_settings_let_its_uploads_through(bench, tmp_path_factory, tmp_path, monkeypatch):
    """Against a real server: 4 clients from one address send 45 uploads. With the bench's settings
    every upload is answered (over the default 30 a minute); with the default limit the uploads
    past 30 are 429s, and the bench's check says so. configure() writes the settings into the bench
    repo's params.yaml, which `carsearch serve` reads."""
    from carsearch.core.params import load_params
    from carsearch.index.search import CarSearch
    from carsearch.serve import create_app

    monkeypatch.setattr(bench, "MAX_REQUESTS", 45)  # 45 uploads, however slow the machine: past the default 30 a minute
    root = shared_repo(tmp_path_factory)
    image = next((root / "data/raw/images").glob("*.jpg")).read_bytes()
    searcher = CarSearch(root=root)
    for settings, want_ok in ((SETTINGS.model_copy(update=bench.SERVER), True), (SETTINGS, False)):
        assert settings.upload_rate_per_minute == (0 if want_ok else 30)
        server = Server(create_app(searcher, settings, root))
        try:
            res = _uploads(bench, server.url, image)
        finally:
            server.stop()
        if want_ok:
            assert res["requests"] == 45 and res["errors"] == 0 and bench.check([res]) == [], res
        else:
            assert res["requests"] == 45 and res["errors"] >= 15 and "429" in bench.check([res])[0], res
    # the bench repo's params.yaml gets the settings, also when it already exists (--root reused)
    repo = tmp_path / "bench"
    repo.mkdir()
    (repo / "params.yaml").write_text((root / "params.yaml").read_text())
    bench.configure(repo)
    assert load_params(repo / "params.yaml")["serve"]["upload_rate_per_minute"] == 0

"""Issue 22 item 2, with real dvc in subprocesses: build_index's LanceDB versions are not copied into
`.dvc/cache` (data/index is `cache: false`); the tracked artifact is the manifest. `git checkout`
of an old revision + `dvc checkout` restores that revision's manifest and leaves the index
folder alone; `carsearch index checkout` then points the live index back at that version."""

from __future__ import annotations

import json
import shutil
import sys

import yaml

from conftest import REPO, run
from test_index_corpus import _photos, repo  # noqa: F401  (the repo fixture)

DVC = [sys.executable, "-m", "dvc"]


def _stage_only(root):
    """The project's list_corpus and build_index stages (code deps left out: the code is the installed package)."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())
    keep = {n: stages["stages"][n] for n in ("list_corpus", "build_index")}
    for st in keep.values():
        st["deps"] = [d for d in st["deps"] if not str(d).startswith("src/")]
    (root / "dvc.yaml").write_text(yaml.safe_dump({"vars": stages["vars"], "stages": keep}))
    for dep in {d for st in keep.values() for d in st["deps"] if str(d).startswith("conf/")}:  # e.g. cameras.yaml
        (root / dep).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / dep, root / dep)


def test_index_is_not_in_the_dvc_cache_and_an_old_revision_checks_out(repo):  # noqa: F811
    _photos(repo / "photos", 2)
    p = yaml.safe_load((repo / "params.yaml").read_text())
    p["index"].update(corpus="folder", corpus_path="photos")
    (repo / "params.yaml").write_text(yaml.safe_dump(p))
    (repo / "metrics").mkdir(exist_ok=True)
    (repo / "metrics/eval.json").write_text("{}")
    (repo / "metrics/calibration.json").write_text("{}")  # evaluate's fits: none (hits get no confidence)
    _stage_only(repo)
    shutil.copy(REPO / "data/.gitignore", repo / "data/.gitignore")  # data/index is not in git either
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    for cmd in (["git", "init", "-q", "-b", "main"], [*DVC, "init", "-q"]):
        run(cmd, repo)
    run([*DVC, "repro", "-q", "build_index"], repo)
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-qm", "one"], repo)
    first = json.loads((repo / "data/index_manifest.json").read_text())
    _photos(repo / "photos", 1, colors=("red",), start=10)
    run([*DVC, "repro", "-q", "build_index"], repo)
    run(["git", "add", "-A"], repo)
    run([*git, "commit", "-qm", "two"], repo)
    second = json.loads((repo / "data/index_manifest.json").read_text())
    assert (first["rows"], second["rows"]) == (6, 7) and first["digest"] != second["digest"]

    # the cache holds the two manifests and the two corpus listings: no LanceDB file, no image
    cached = [f for f in (repo / ".dvc/cache").rglob("*") if f.is_file()]
    assert len(cached) == 4 and all(f.stat().st_size < 20_000 for f in cached), cached
    assert len((repo / "data/corpus_listing.tsv").read_text().splitlines()) == 7  # path, size, mtime
    assert not list((repo / "data/index/images").glob("*")) if (repo / "data/index/images").is_dir() else True

    run(["git", "checkout", "-q", "HEAD~1"], repo)
    run([*DVC, "checkout", "-q"], repo)
    assert json.loads((repo / "data/index_manifest.json").read_text()) == first  # that revision's manifest
    pointer = json.loads((repo / "data/index/carsearch_index.json").read_text())
    assert pointer["version"] == second["version"]  # the index folder is left as it is
    out = run([sys.executable, "-m", "carsearch.cli", "index", "checkout"], repo).stdout
    assert f"live index is now {first['version']} (6 rows" in out
    got = run(
        [sys.executable, "-c", "from carsearch.index.search import CarSearch; print(CarSearch().table.count_rows())"],
        repo,
    )
    assert got.stdout.strip().splitlines()[-1] == "6"

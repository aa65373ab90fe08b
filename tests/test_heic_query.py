"""A HEIC photo (a phone's) can be searched with, as it can be indexed: `carsearch search --image
photo.heic` and the Python API read it through the one image opener (carsearch.core.imaging, with
pillow-heif), in a fresh process as a user runs them (issue 30 item 7)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pillow_heif
from PIL import Image

from test_index_corpus import _build, _photos, repo  # noqa: F401  (pytest fixture + helpers)

SRC = Path(__file__).resolve().parents[1] / "src"


def _fresh(root: Path, *args: str) -> subprocess.CompletedProcess:
    """A new Python process (nothing registered with PIL beforehand), on this tree's code."""
    env = {**os.environ, "CARSEARCH_ROOT": str(root), "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, cwd=root)


def test_search_with_a_heic_photo_from_the_cli_and_the_python_api(repo, tmp_path):  # noqa: F811
    photos = tmp_path / "photos"
    jpegs = _photos(photos, 2)
    assert _build(repo, corpus="folder", corpus_path=str(photos))["rows"] == 6
    target = jpegs[3]  # blue/photo 1.jpg
    heic = tmp_path / "phone photo.heic"
    pillow_heif.register_heif_opener()
    with Image.open(target) as im:
        im.save(heic, format="HEIF", quality=-1)  # lossless HEIC of an indexed photo
    assert heic.read_bytes()[4:12] == b"ftypheic"

    cli = _fresh(repo, "-m", "carsearch.cli", "search", "--image", str(heic), "-k", "3")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    hits = [line.split("\t") for line in cli.stdout.splitlines() if line.split("\t")[0].isdigit()]
    assert [h[-1] for h in hits][:1] == [str(target)] and len(hits) == 3, cli.stdout  # the photo itself first

    api = _fresh(
        repo,
        "-c",
        "import json; from pathlib import Path; from carsearch.search import CarSearch;"
        f"hits = CarSearch(root=Path({str(repo)!r})).image({str(heic)!r}, k=3);"
        "print(json.dumps([[h.origin, h.score] for h in hits]))",
    )
    assert api.returncode == 0, api.stderr
    got = json.loads(api.stdout.strip().splitlines()[-1])
    assert len(got) == 3 and Path(got[0][0]) == target and got[0][1] >= got[1][1] and got[0][1] > 0.99

    # a file that is no image still gets the one clear line
    bad = tmp_path / "notes.heic"
    bad.write_text("not a photo")
    r = _fresh(repo, "-m", "carsearch.cli", "search", "--image", str(bad))
    assert r.returncode == 1 and f"{bad}: not an image (unrecognised format)" in r.stdout + r.stderr

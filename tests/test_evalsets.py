"""Judge models on the user's own photos: labelled eval sets (folder sources, partial labels) are
evaluated per set, overlap with the training pairs is refused, and the promotion gate decides by
the configured set."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from carsearch.evaluation.evalsets import set_report
from conftest import DASHCAM
from testkit import write_pairs, write_params

REPO = Path(__file__).resolve().parents[1]


def _colour_folder(folder: Path, n: int = 12, seed: int = 5) -> None:
    from carsearch.sources.demo import demo_items

    for i, (_, data, labels, _) in enumerate(demo_items(n, 64, seed, colors=["red", "blue", "green"])):
        (folder / labels["color"]).mkdir(parents=True, exist_ok=True)
        (folder / labels["color"] / f"p{i}.jpg").write_bytes(data)


def test_set_report_on_partial_labels():
    labels = [{"color": "red"}, {"color": "red"}, {"color": "blue"}, {"color": "blue", "view": "rear"}, {}]
    img = np.eye(5, 4, dtype=np.float32)
    img[1] = img[0]
    img[3] = img[2]

    def enc(texts):  # "red" phrasings point at image 0, "blue" at image 2
        return np.stack([img[0] if "red" in t else img[2] for t in texts])

    r = set_report(img, labels, enc, ["color", "body_type", "view"], k=2)
    # view has one value only (nothing to tell apart): skipped like an absent attribute
    assert r["attributes"] == ["color"] and "body_type" in r["skipped"] and "same view" in r["skipped"]["view"]
    c = r["text_to_image"]["by_attribute"]["color"]
    assert c["precision@2"] == 1.0 and set(c["by_value"]) == {"red", "blue"} and len(c["by_phrasing"]) == 3
    assert r["image_to_image"]["by_attribute"]["color"]["precision@2"] == pytest.approx(0.5)  # 1 right of top 2
    assert set(r["image_to_image"]["by_attribute"]) == {"color"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    write_pairs(root, {"train": 24, "val": 8, "test": 12})
    mp = pytest.MonkeyPatch()
    mp.setenv("CARSEARCH_ROOT", str(root))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    write_params(root, train={"epochs": 2})
    from carsearch.stages import finetune_clip

    finetune_clip.main()
    yield root
    mp.undo()


def test_sets_are_evaluated_and_the_gate_uses_the_configured_set(trained, monkeypatch, capsys):
    root = trained
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlruns.db'}")
    _colour_folder(root / "photos")
    sets = [{"name": "colours", "path": "photos"}]
    if DASHCAM.is_dir():
        subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts/make_dashcam_evalset.py"),
                "--src",
                str(DASHCAM),
                "--out",
                str(root / "dashcam"),
            ],
            check=True,
        )
        sets.append({"name": "dashcam", "path": str(root / "dashcam")})
    base = write_params(root, train={"epochs": 2})
    write_params(
        root,
        train={"epochs": 2},
        eval={**base["eval"], "sets": sets},
        index={**base["index"], "promote": {"metric": "text_to_image.precision@5", "min_gain": -1.0, "set": "colours"}},
    )
    from carsearch.stages import build_index, evaluate

    evaluate.main()
    out = capsys.readouterr().out
    ev = json.loads((root / "metrics/eval.json").read_text())
    assert set(ev["sets"]) == {s["name"] for s in sets}
    col = ev["sets"]["colours"]
    assert col["finetuned"]["attributes"] == ["color"] and "view" in col["finetuned"]["skipped"]
    assert 0 <= col["finetuned"]["text_to_image"]["precision@5"] <= 1
    assert "evaluate: set 'colours': skipped view queries" in out and "evaluate[set colours]" in out
    assert (root / "metrics/plots/sets/examples_colours.png").read_bytes()[:4] == b"\x89PNG"
    build_index.main()
    idx = json.loads((root / "metrics/index.json").read_text())
    assert idx["promotion"]["set"] == "colours" and idx["model"] == "finetuned"  # min_gain -1: always promoted
    assert set(idx["promotion"]["sets"]) == {s["name"] for s in sets}
    assert "on eval set 'colours'" in idx["promotion"]["reason"]
    if not DASHCAM.is_dir():  # the real-photo part: recorded as a skip (a failure under CARSEARCH_REQUIRE_ALL=1)
        pytest.skip("the real-photo set: ../shared/fixtures/dashcam not present (the colour-folder set passed)")
    d = ev["sets"]["dashcam"]["finetuned"]
    # all nine crops are sedans seen from behind: only colour tells them apart
    assert d["images"] == 9 and d["attributes"] == ["color"] and "same view (rear)" in d["skipped"]["view"]


def test_overlap_with_training_is_refused(trained, monkeypatch):
    root = trained
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    leak = root / "leak"
    (leak / "red").mkdir(parents=True)
    train = [json.loads(l) for l in (root / "data/pairs/train.jsonl").read_text().splitlines()]
    shutil.copy(root / train[0]["path"], leak / "red" / "x.jpg")
    shutil.copy(root / train[1]["path"], leak / "red" / "y.jpg")
    base = write_params(root, train={"epochs": 2})
    write_params(root, train={"epochs": 2}, eval={**base["eval"], "sets": [{"name": "leak", "path": "leak"}]})
    from carsearch.evaluation.evalsets import EvalSetError
    from carsearch.stages import evaluate

    with pytest.raises(EvalSetError, match=r"eval set 'leak': 2 image\(s\) are also in the training pairs"):
        evaluate.main()

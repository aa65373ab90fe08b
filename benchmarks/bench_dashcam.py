"""The six real dashcam frames (../shared/fixtures/dashcam, hand-drawn COCO boxes in
tests/fixtures/dashcam_coco.json) indexed as a user's folder with the promoted model, then each
vehicle's colour query ("a black car", "a white car"): where does that vehicle rank?

The index is built the way the README's "Search by text" example builds it: a scratch repo with
`index.corpus=folder`, the stages list_corpus and build_index (promotion gate included: the model
is the one the gate picks from metrics/eval.json), then `CarSearch.text`. Per vehicle:
- `rank`: its place among every row of the index (9 vehicles and the one frame without a box);
- `rank_vs_other_colours`: 1 + the rows ranked above it that are not of its colour (the other cars
  of the same colour are right answers too: with 5 white cars, at most 3 can be in any top 3);
- `rank_in_frame`: its place among the rows of its own frame.
The floor of issue 31: each vehicle in the top 3 of its colour query (`rank_vs_other_colours` <= 3).

    python benchmarks/bench_dashcam.py                       # models/finetuned, metrics/
    python benchmarks/bench_dashcam.py --model DIR --metrics DIR --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
COCO = REPO / "tests" / "fixtures" / "dashcam_coco.json"
TOP = 3


def vehicles(coco: dict) -> list[dict]:
    """The annotated vehicles: file, box (x1, y1, x2, y2) and colour."""
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out = []
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        out.append({"file": files[a["image_id"]], "box": (x, y, x + w, y + h), "color": a["attributes"]["color"]})
    return out


def build(repo: Path, photos: Path, model: Path, metrics: Path) -> None:
    """A scratch repo around `photos` with the model and its evaluation; list_corpus + build_index."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["index"].update(corpus="folder", corpus_path=str(photos))
    (repo / "metrics").mkdir(parents=True)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / "dvc.yaml").write_text("stages: {}\n")
    shutil.copytree(REPO / "conf", repo / "conf")
    shutil.copytree(model, repo / params["paths"]["model_dir"])
    for name in ("eval.json", "calibration.json"):
        shutil.copy(metrics / name, repo / "metrics" / name)
    (repo / params["paths"]["pairs_dir"]).mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}
    for stage in ("list_corpus", "build_index"):
        p = subprocess.run([sys.executable, "-m", f"carsearch.stages.{stage}"], cwd=repo, env=env, text=True,
                           capture_output=True)  # fmt: skip
        if p.returncode:
            raise SystemExit(f"{stage} failed:\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}")
        print(p.stdout.strip().splitlines()[-1] if p.stdout.strip() else stage)


def ranks(hits: list, cars: list[dict], color: str) -> list[dict]:
    """Each vehicle of `color`: its ranks in `hits` (the whole index, best first)."""
    rows = [(h["file"], tuple(h["box"]) if h.get("box") else None) for h in hits]
    colour_of = {(c["file"], c["box"]): c["color"] for c in cars}
    out = []
    for c in cars:
        if c["color"] != color:
            continue
        at = rows.index((c["file"], c["box"]))
        above = rows[:at]
        out.append(
            dict(
                c,
                query=f"a {color} car",
                rank=at + 1,
                rank_vs_other_colours=1 + sum(colour_of.get(r) != color for r in above),
                rank_in_frame=1 + sum(f == c["file"] for f, _ in above),
            )
        )
    return out


def _hit(h) -> dict:
    d = h if isinstance(h, dict) else h.model_dump() if hasattr(h, "model_dump") else vars(h)
    box = d.get("box")
    return {"file": Path(str(d.get("file") or d.get("origin") or "")).name, "box": box}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dashcam", type=Path, default=REPO.parent / "shared" / "fixtures" / "dashcam")
    ap.add_argument("--model", type=Path, default=REPO / "models" / "finetuned")
    ap.add_argument("--metrics", type=Path, default=REPO / "metrics")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    if not a.dashcam.is_dir():
        print(f"bench_dashcam: skipped, {a.dashcam} not found (the dashcam fixtures live in ../shared)")
        return 0
    if not (a.model / "config.json").is_file():
        print(f"bench_dashcam: skipped, no model at {a.model} (run `make repro` first, or pass --model)")
        return 0
    coco = json.loads(COCO.read_text())
    cars = vehicles(coco)
    with tempfile.TemporaryDirectory() as tmp:
        photos, repo = Path(tmp) / "photos", Path(tmp) / "repo"
        photos.mkdir()
        for im in coco["images"]:
            shutil.copy(a.dashcam / im["file_name"], photos / im["file_name"])
        (photos / "boxes.json").write_text(json.dumps(coco))
        build(repo, photos, a.model, a.metrics)
        from carsearch.index.search import CarSearch

        search = CarSearch(root=repo)
        got = []
        for color in sorted({c["color"] for c in cars}):
            hits = [_hit(h) for h in search.text(f"a {color} car", k=100)]
            got += ranks(hits, cars, color)
        model = search.index.model_source[1]
    for r in got:
        print(f"{r['query']:13s} {r['file']} box={','.join(map(str, r['box'])):18s} rank {r['rank']:2d}/{len(hits)}  "
              f"vs other colours {r['rank_vs_other_colours']}  in frame {r['rank_in_frame']}")  # fmt: skip
    ok = sum(r["rank_vs_other_colours"] <= TOP for r in got)
    print(f"dashcam: {ok}/{len(got)} vehicles in the top {TOP} of their colour query (other colours ahead); "
          f"{sum(r['rank'] <= TOP for r in got)}/{len(got)} by raw rank; model {model} (content hash)")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps({"vehicles": got, "in_top": ok, "n": len(got), "rows": len(hits)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The real-photo case of issue 34 ("Measured"): a user's judgments on the shared dashcam crops as the
eval set (`eval.sets` kind `judgments`) that decides the promotion gate.

The nine hand-boxed vehicles of the six dashcam frames (../shared/fixtures/dashcam, COCO boxes in
tests/fixtures/dashcam_coco.json, as benchmarks/bench_dashcam.py reads them) are cropped to files in a
scratch copy of a built repo (after `make repro`). The user types each colour and colour x view
query the vehicles have (`core.vocab.query_text`: "a white car", "a black car seen from behind"),
searches the crops with the repo's fine-tuned model and judges every hit from the COCO labels
(✓ when the vehicle has every attribute the query names). They go to data/feedback/dashcam.jsonl,
set as `eval.sets` [{name: dashcam, kind: judgments, eval_fraction: 1}] (every judged query held
out: an eval set only) with `index.promote.set=dashcam`; then the `evaluate` stage entry point runs
in the copy (not `dvc exp run`: `eval.sets` is a param of finetune_clip too, so DVC would retrain).
Reported: the set's precision@k (eval.set_k) and pairwise order for base and fine-tuned, their
paired gain, and what the gate decides on each metric.

--exp: the whole pipeline instead, as a user's page judgments reach it. The judgments go to the
DVC-tracked paths.judgments (data/feedback/judgments.jsonl), and

    dvc exp run -S 'eval.sets=[{name: dashcam, kind: judgments, eval_fraction: 1, ...}]'
                -S index.promote.set=dashcam -S index.promote.metric=text_to_image.precision@k

runs every stage it affects (finetune_clip retrains: the set's queries are all held out, so the model
learns nothing from them; evaluate scores the set; build_index's gate decides on it and records the
decision in metrics/index.json, which is reported).

    python benchmarks/bench_feedback_dashcam.py --repo /path/to/built/repo [--work DIR] [--json OUT] [--exp]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
REPO = Path(__file__).resolve().parents[1]
COCO = REPO / "tests" / "fixtures" / "dashcam_coco.json"
PHOTOS = [REPO.parent / "shared" / "fixtures" / "dashcam", Path("/work/shared/fixtures/dashcam")]
SET = {"name": "dashcam", "kind": "judgments", "path": "data/feedback/dashcam.jsonl", "eval_fraction": 1.0}
ATTRS = ("color", "view")


def crops(coco: dict, photos: Path, root: Path) -> list[dict]:
    """Each annotated vehicle cropped to data/feedback/dashcam/: {"id", "path", "labels"}."""
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out_dir = root / "data" / "feedback" / "dashcam"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        hit_id = f"{Path(files[a['image_id']]).stem}_{a['id']}"
        name = f"{hit_id}.jpg"
        with Image.open(photos / files[a["image_id"]]) as im:
            im.convert("RGB").crop((x, y, x + w, y + h)).save(out_dir / name, quality=95)
        rows.append({"id": hit_id, "path": f"data/feedback/dashcam/{name}", "labels": dict(a["attributes"])})
    return rows


def judge(root: Path, rows: list[dict]) -> dict:
    """Every colour and colour x view query the vehicles have; every crop judged, ranked by the
    fine-tuned model (the index the user searched)."""
    from carsearch.core.vocab import query_text
    from carsearch.evaluation.protocol import embed_texts
    from carsearch.feedback import store
    from carsearch.feedback.record import Hit, Judgment, Query
    from carsearch.model.clip import encode_images, load_pretrained

    queries = sorted(
        {tuple((k, r["labels"][k]) for k in keys) for r in rows for n in (1, 2) for keys in itertools.combinations(ATTRS, n)
         if "color" in keys}
    )  # fmt: skip
    model, proc = load_pretrained(str(root / "models" / "finetuned"))
    img = np.asarray(encode_images(model, proc, [root / r["path"] for r in rows]), np.float64)
    texts = [query_text(dict(q).get("color"), None, dict(q).get("view")) for q in queries]
    txt = np.asarray(embed_texts(model, proc, texts), np.float64)
    made, ticks = [], 0
    for q, t, vec in zip(queries, texts, txt):
        for rank, i in enumerate(np.argsort(-(img @ vec), kind="stable"), 1):
            ok = all(rows[i]["labels"].get(k) == v for k, v in q)
            ticks += ok
            made.append(
                Judgment.make(Query(kind="text", text=t), Hit(id=rows[i]["id"], rank=rank, path=rows[i]["path"]), ok)
            )
    path = root / SET["path"]
    path.write_text("")
    store.append(path, made)
    return {"queries": texts, "judgments": len(made), "ticks": ticks}


def evaluate(root: Path, metric: str) -> dict:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["eval"]["sets"] = [SET]
    params["index"]["promote"].update(set=SET["name"], metric=metric)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "HF_HUB_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}  # fmt: skip
    subprocess.run([sys.executable, "-m", "carsearch.stages.evaluate"], cwd=root, env=env, check=True)
    return json.loads((root / "metrics" / "eval.json").read_text())


def exp_run(root: Path, metric: str) -> tuple[dict, dict, float]:
    """`dvc exp run` in the copy with the judged set deciding the gate: (eval.json, index.json, seconds)."""
    from bench_feedback_repo import dvc_env

    sets = f"eval.sets=[{{name:{SET['name']},kind:judgments,path:'{SET['path']}',eval_fraction:1.0}}]"
    cmd = ["dvc", "exp", "run", "-n", "dashcam-gate", "-S", sets, "-S", f"index.promote.set={SET['name']}",
           "-S", f"index.promote.metric={metric}"]  # fmt: skip
    (root / "exp_cmd.txt").write_text(" ".join(cmd) + "\n")
    t0 = time.perf_counter()
    with (root.parent / "dashcam.log").open("w") as log:
        subprocess.run(cmd, cwd=root, env=dvc_env(root), stdout=log, stderr=subprocess.STDOUT, check=True)
    m = root / "metrics"
    return (
        json.loads((m / "eval.json").read_text()),
        json.loads((m / "index.json").read_text()),
        time.perf_counter() - t0,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="a built repo (after make repro), read only")
    ap.add_argument("--photos", type=Path, default=next((p for p in PHOTOS if p.is_dir()), PHOTOS[0]))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--exp", action="store_true", help="judge into paths.judgments and `dvc exp run` the whole DAG")
    a = ap.parse_args()
    from carsearch.index.promotion import promotion_decision

    work = a.work or Path(tempfile.mkdtemp(prefix="bench_feedback_dashcam_"))
    root = work / "dashcam"
    if a.exp:
        SET["path"] = yaml.safe_load((a.repo / "params.yaml").read_text())["paths"]["judgments"]
    if not root.exists():
        if a.exp:
            from bench_feedback_repo import copy_repo

            copy_repo(a.repo.resolve(), root)
        else:
            shutil.copytree(a.repo, root, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    rows = crops(json.loads(COCO.read_text()), a.photos, root)
    user = judge(root, rows)
    k = int(yaml.safe_load((root / "params.yaml").read_text())["eval"]["set_k"])
    out: dict = {"user": user, "gates": {}}
    if a.exp:
        ev, index, seconds = exp_run(root, f"text_to_image.precision@{k}")
        out.update(pipeline_gate=index["promotion"], seconds=seconds, indexed_with=index.get("model_ref"))
        print(f"bench_feedback_dashcam: dvc exp run {seconds:.0f}s; build_index's gate: "
              f"{index['promotion']['use']} ({index['promotion']['reason']})")  # fmt: skip
    else:
        ev = evaluate(root, f"text_to_image.precision@{k}")
    s = out["set"] = ev["sets"][SET["name"]]
    print(f"bench_feedback_dashcam: {len(rows)} crops, {len(user['queries'])} queries, {user['judgments']} judged "
          f"({user['ticks']} ✓); base vs fine-tuned, 95 % bootstrap")  # fmt: skip
    print("| metric | base | fine-tuned | gain (paired 95 %) | gate on it |")
    print("|---|---|---|---|---|")
    for m in (f"precision@{k}", "pairwise"):
        g = promotion_decision(ev, f"text_to_image.{m}", 0.0, SET["name"])
        out["gates"][m] = g
        b, f = s["base"]["text_to_image"], s["finetuned"]["text_to_image"]
        gain, ci = s["gain"]["text_to_image"][m], s["gain"]["text_to_image"][f"{m}_ci"]
        print(f"| {m} | {b[m]:.3f} [{b[m + '_ci'][0]:.3f}, {b[m + '_ci'][1]:.3f}] | {f[m]:.3f} "
              f"[{f[m + '_ci'][0]:.3f}, {f[m + '_ci'][1]:.3f}] | {gain:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}] | {g['use']} |")  # fmt: skip
    if a.json:
        a.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()

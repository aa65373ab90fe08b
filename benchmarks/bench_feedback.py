"""A simulated user teaches the model (issue 34, "Measured"): does training on judgments help?

For each N (default 25, 50, 100) a user types N queries from the world's vocabulary (colour x body
type x view, then colour x body type, ...: `core.vocab.query_text`, the eval queries' wording),
searches the train + val images with the model fine-tuned WITHOUT feedback (the index they would
have), and judges the top 24 from ground truth (✓ when the image has every attribute the query
names). Then `finetune_clip` retrains with those judgments (`train.feedback_weight` 1; the
judgments eval set with `eval_fraction` 0.5, so half the judged queries are held out, by query) and
`evaluate` scores it, as `dvc exp run -S train.feedback_weight=1` runs them (the stage entry points
in-process, in DVC's order; DVC itself does not run here). Reported on the held-out test split:
text->image R@5 and mAP@10 with bootstrap intervals, the paired change against no feedback
(`carsearch report`'s paired bootstrap over the same test queries), the judged set's pairwise order
on the held-out judged queries, and what the promotion gate decided.

The data is a toy world (testkit's demo drawings, the tiny random-init CLIP), so a run takes
minutes on 2 CPU cores; the figures say how the loop behaves, not how a real model gains.

python benchmarks/bench_feedback.py [--sizes 25,50,100] [--epochs 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # testkit: the toy world the tests use

from carsearch.core.vocab import query_text  # noqa: E402
from testkit import write_pairs, write_params  # noqa: E402

TOP = 24
JUDGED = {"name": "judged", "kind": "judgments", "path": "data/feedback/judgments.jsonl", "eval_fraction": 0.5}
ATTRS = ("color", "body_type", "view")


@contextlib.contextmanager
def _env(root: Path):
    old = {k: os.environ.get(k) for k in ("CARSEARCH_ROOT", "MLFLOW_TRACKING_URI")}
    os.environ.update(CARSEARCH_ROOT=str(root), MLFLOW_TRACKING_URI=f"sqlite:///{root / 'mlruns.db'}")
    try:
        yield
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def run_stages(root: Path, epochs: int, feedback: bool) -> dict:
    """finetune_clip then evaluate in `root` (params as `dvc exp run -S ...` would set them)."""
    from carsearch.stages import evaluate, finetune_clip

    write_params(
        root,
        train={"epochs": epochs, "feedback_weight": 1.0 if feedback else 0.0},
        eval={"sets": [JUDGED] if feedback else []},
        index={"promote": {"metric": "text_to_image.recall@5", "min_gain": 0.0}},
    )
    t0 = time.perf_counter()
    with _env(root), contextlib.redirect_stdout(sys.stderr):
        finetune_clip.main()
        evaluate.main()
    m = root / "metrics"
    return {
        "eval": json.loads((m / "eval.json").read_text()),
        "train": json.loads((m / "train.json").read_text()),
        "queries_csv": (m / "eval_queries.csv").read_text(),
        "seconds": time.perf_counter() - t0,
    }


def user_queries(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """N attribute combinations the images have, most specific first (shuffled within a level); fewer
    when the images have fewer (the toy world's 120 train + val drawings have 71)."""
    rng = random.Random(seed)
    out: list[dict] = []
    for size in (3, 2, 1):
        level = sorted(
            {tuple((a, r["labels"][a]) for a in keys) for r in rows for keys in itertools.combinations(ATTRS, size)}
        )
        rng.shuffle(level)
        out += [dict(x) for x in level]
    return out[:n]


def simulate_user(root: Path, rows: list[dict], n: int) -> dict:
    """Judge the top 24 of N queries over `rows` with the model in root/models/finetuned."""
    from carsearch.evaluation.protocol import embed_texts
    from carsearch.feedback import store
    from carsearch.feedback.record import Hit, Judgment, Query
    from carsearch.model.clip import encode_images, load_pretrained

    model, proc = load_pretrained(str(root / "models" / "finetuned"))
    img = np.asarray(encode_images(model, proc, [root / r["path"] for r in rows]), dtype=np.float64)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    queries = user_queries(rows, n)
    texts = [query_text(q.get("color"), q.get("body_type"), q.get("view")) for q in queries]
    txt = np.asarray(embed_texts(model, proc, texts), dtype=np.float64)
    made, ticks = [], 0
    for q, t, vec in zip(queries, texts, txt):
        order = np.argsort(-(img @ vec), kind="stable")[:TOP]
        for rank, i in enumerate(order, 1):
            ok = all(rows[i]["labels"].get(a) == v for a, v in q.items())
            ticks += ok
            made.append(
                Judgment.make(Query(kind="text", text=t), Hit(id=rows[i]["id"], rank=rank, path=rows[i]["path"]), ok)
            )
    store.append(root / JUDGED["path"], made)
    return {"queries": len(queries), "judgments": len(made), "ticks": ticks}


def _fig(e: dict, key: str) -> str:
    ci = e.get(f"{key}_ci")
    return f"{e.get(key, float('nan')):.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def row_of(name: str, res: dict, base: dict | None) -> dict:
    from carsearch.experiments.report import significance
    from carsearch.index.promotion import promotion_decision

    ev = res["eval"]
    t2i = ev["finetuned"]["text_to_image"]
    gate = promotion_decision(ev, "text_to_image.recall@5", 0.0)
    out = {
        "run": name,
        "t2i_R@5": _fig(t2i, "recall@5"),
        "t2i_mAP@10": _fig(t2i, "map@10"),
        "gate": f"{gate['use']} ({gate['finetuned']:.3f} vs base {gate['base']:.3f})",
        "stages_s": round(res["seconds"], 1),
    }
    if base is not None:
        sig = {(s["direction"], s["metric"]): s for s in significance(base["queries_csv"], res["queries_csv"])}
        for key, metric in (("dR@5", "recall@5"), ("dmAP@10", "map@10")):
            s = sig.get(("text_to_image", metric))
            out[key] = f"{s['diff']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}] {s['verdict']}" if s else "—"
        fb = res["train"].get("feedback") or {}
        judged = ((ev.get("sets") or {}).get("judged") or {}).get("finetuned", {}).get("text_to_image", {})
        out["trained_queries"] = len(fb.get("train_queries", []))
        out["held_out_pairwise"] = _fig(judged, "pairwise") if judged else "—"
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="25,50,100", help="N: how many queries the user judges (comma-separated)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--images", default="160,48,60", help="train,val,test demo drawings")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    n_train, n_val, n_test = (int(x) for x in a.images.split(","))
    rows_out, t0 = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_feedback_") as tmp:
        world = Path(tmp) / "world"
        world.mkdir()
        splits = write_pairs(world, {"train": n_train, "val": n_val, "test": n_test}, size=48, views=["front", "side"])
        base_root = Path(tmp) / "no_feedback"
        shutil.copytree(world, base_root)
        base = run_stages(base_root, a.epochs, feedback=False)
        rows_out.append(row_of("no feedback", base, None))
        seen = splits["train"] + splits["val"]  # what the user's index holds; test stays held out
        for n in sizes:
            root = Path(tmp) / f"n{n}"
            shutil.copytree(world, root)
            shutil.copytree(base_root / "models" / "finetuned", root / "models" / "finetuned")  # the index's model
            user = simulate_user(root, seen, n)
            shutil.rmtree(root / "models" / "finetuned")
            res = run_stages(root, a.epochs, feedback=True)
            rows_out.append(row_of(f"N={user['queries']} ({user['judgments']} judged, {user['ticks']} ✓)", res, base))
            print(f"bench_feedback: {json.dumps(rows_out[-1], ensure_ascii=False)}", file=sys.stderr, flush=True)
    cols = [
        "run",
        "t2i_R@5",
        "dR@5",
        "t2i_mAP@10",
        "dmAP@10",
        "trained_queries",
        "held_out_pairwise",
        "gate",
        "stages_s",
    ]
    print(f"bench_feedback: {n_train}/{n_val}/{n_test} demo drawings, tiny CLIP, {a.epochs} epochs; "
          f"test split, 95 % bootstrap; d = paired change vs no feedback; {time.perf_counter() - t0:.0f}s in all")  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows_out:
        print("| " + " | ".join(str(r.get(c, "—")) for c in cols) + " |")
    if a.json:
        a.json.write_text(json.dumps(rows_out, indent=2) + "\n")


if __name__ == "__main__":
    main()

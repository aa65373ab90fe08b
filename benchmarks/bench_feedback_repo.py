"""The simulated user of bench_feedback.py at real scale (issue 34, "Measured"): a built repo (the
default pipeline after `make repro`: the street world, the fine-tuned model, metrics/) is copied to a
scratch folder per N, and DVC itself retrains there.

For each N the user types N queries from the world's vocabulary (`core.vocab.query_text` over the
colour x body type x view combinations the train + val images have, most specific first), searches
the train + val images with the repo's fine-tuned model (trained without feedback: the repo's
judgments file is empty) and judges the top 24 from the images' labels (✓ when the image has every
attribute the query names). The judgments go into the copy's data/feedback/judgments.jsonl, then

    dvc exp run -S train.feedback_weight=W -S 'eval.sets=[{name: judged, kind: judgments, ...}]'

retrains (finetune_clip and evaluate: `--target evaluate`, the default, leaves out list_corpus,
build_index and summarize, which the metrics do not need; the gate's decision is computed from
eval.json by the function build_index uses; the judged set's eval_fraction 0.5 holds
half the judged queries out of training, by query). "No feedback" is the repo's own metrics/. The
table: held-out test split t2i R@5 and mAP@10 with bootstrap intervals, the paired change against
no feedback, the held-out judged queries' pairwise order, and what the gate decided.

    python benchmarks/bench_feedback_repo.py --repo /path/to/built/repo [--sizes 25,50,100]
        [--work DIR] [--jobs 2] [--weight 0.1] [--json OUT]

DVC runs from the same interpreter's bin (PATH), the stages import the copy's own src/ (PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_feedback import JUDGED, TOP, row_of, user_queries  # noqa: E402
from carsearch.core.vocab import query_text  # noqa: E402

SETS = "eval.sets=[{name:judged,kind:judgments,path:'data/feedback/judgments.jsonl',eval_fraction:0.5}]"


def seen_rows(repo: Path) -> list[dict]:
    """The train + val pairs (id, path, labels): what the user's index holds; test stays held out."""
    rows = []
    for split in ("train", "val"):
        for line in (repo / "data" / "pairs" / f"{split}.jsonl").read_text().splitlines():
            if line.strip():
                rows.append(json.loads(line))
    return rows


def embed_seen(repo: Path, rows: list[dict]):
    from carsearch.model.clip import encode_images, load_pretrained

    model, proc = load_pretrained(str(repo / "models" / "finetuned"))
    img = np.asarray(encode_images(model, proc, [repo / r["path"] for r in rows]), dtype=np.float64)
    return model, proc, img / np.linalg.norm(img, axis=1, keepdims=True)


def judge(model, proc, img: np.ndarray, rows: list[dict], n: int) -> tuple[list, dict]:
    from carsearch.evaluation.protocol import embed_texts
    from carsearch.feedback.record import Hit, Judgment, Query

    queries = user_queries(rows, n)
    texts = [query_text(q.get("color"), q.get("body_type"), q.get("view")) for q in queries]
    txt = np.asarray(embed_texts(model, proc, texts), dtype=np.float64)
    made, ticks = [], 0
    for q, t, vec in zip(queries, texts, txt):
        for rank, i in enumerate(np.argsort(-(img @ vec), kind="stable")[:TOP], 1):
            ok = all(rows[i]["labels"].get(a) == v for a, v in q.items())
            ticks += ok
            made.append(
                Judgment.make(Query(kind="text", text=t), Hit(id=rows[i]["id"], rank=rank, path=rows[i]["path"]), ok)
            )
    return made, {"queries": len(queries), "judgments": len(made), "ticks": ticks}


def copy_repo(src: Path, dst: Path) -> None:
    """A scratch copy whose outputs are in its DVC cache (`dvc commit -f`: a `make repro` checkout that
    never cached them would have `dvc exp run` rerun every stage, ingest included, for "not in cache")."""
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(".venv"))
    subprocess.run(["dvc", "commit", "-f", "-q"], cwd=dst, env=dvc_env(dst), check=True)


def dvc_env(root: Path) -> dict:
    bindir = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{bindir}:{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(root / "src"),
        "HF_HUB_OFFLINE": "1",
    }


def start_exp(root: Path, log: Path, a: argparse.Namespace, weight: float) -> subprocess.Popen:
    cmd = ["dvc", "exp", "run", "-n", f"feedback-{root.name}", "-S", f"train.feedback_weight={weight}"]
    cmd += ["-S", f"train.epochs={a.epochs}"] if a.epochs else []
    cmd += ["-S", SETS] if a.judged_set and weight else []
    cmd += [a.target] if a.target else []
    (root / "exp_cmd.txt").write_text(" ".join(cmd) + "\n")
    return subprocess.Popen(cmd, cwd=root, env=dvc_env(root), stdout=log.open("w"), stderr=subprocess.STDOUT)


def result(root: Path, seconds: float) -> dict:
    m = root / "metrics"
    return {
        "eval": json.loads((m / "eval.json").read_text()),
        "train": json.loads((m / "train.json").read_text()),
        "queries_csv": (m / "eval_queries.csv").read_text(),
        "seconds": seconds,
    }


COLS = ["run", "t2i_R@5", "dR@5", "t2i_mAP@10", "dmAP@10", "trained_queries", "held_out_pairwise", "gate", "stages_s"]


def collect(work: Path, repo: Path, sizes: list[int], a: argparse.Namespace) -> None:
    """The table of finished runs in `work` (n0 = no feedback at --epochs, else the repo's metrics/)."""
    base = result(work / "n0" if a.epochs else repo, float("nan"))
    out = [row_of(f"no feedback ({a.epochs or 'repo'} epochs)", base, None)]
    for n in sizes:
        root = work / f"n{n}"
        fb = json.loads((root / "metrics" / "train.json").read_text()).get("feedback") or {}
        label = f"N={n} ({sum(1 for _ in (root / JUDGED['path']).open())} judged, {fb.get('positives', '?')} ✓ trained)"
        out.append(row_of(label, result(root, float("nan")), base))
    _emit(out, a.json)


def _emit(out: list[dict], json_path) -> None:
    """The table as markdown on stdout, and as JSON where asked."""
    print("| " + " | ".join(COLS) + " |")
    print("|" + "---|" * len(COLS))
    for r in out:
        print("| " + " | ".join(str(r.get(c, "—")) for c in COLS) + " |")
    if json_path:
        json_path.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, required=True, help="a built repo (after make repro), read only")
    ap.add_argument("--sizes", default="25,50,100")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a new temp folder, kept)")
    ap.add_argument("--jobs", type=int, default=1, help="retrains run at once")
    ap.add_argument("--target", default="evaluate", help="the stage dvc exp run stops at ('' runs the whole DAG)")
    ap.add_argument(
        "--judged-set",
        action="store_true",
        help="also set eval.sets to the judged set (half the judged queries held out of training, and scored)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="retrain with train.epochs=E (then 'no feedback' is retrained too, at E epochs, feedback_weight=0)",
    )
    ap.add_argument("--weight", type=float, default=0.1, help="train.feedback_weight of the retrains with judgments")
    ap.add_argument("--collect", action="store_true", help="run nothing: the table of the runs already in --work")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    sizes = [int(x) for x in a.sizes.split(",") if x.strip()]
    work = a.work or Path(tempfile.mkdtemp(prefix="bench_feedback_repo_"))
    work.mkdir(parents=True, exist_ok=True)
    repo = a.repo.resolve()
    if a.collect:
        return collect(work, repo, sizes, a)
    t0 = time.perf_counter()
    rows = seen_rows(repo)
    model, proc, img = embed_seen(repo, rows)
    print(f"bench_feedback_repo: embedded {len(rows)} train + val images ({time.perf_counter() - t0:.0f}s)", flush=True)
    from carsearch.feedback import store

    todo = []  # (key, root, label, feedback_weight)
    if a.epochs:
        root = work / "n0"
        if not root.exists():
            copy_repo(repo, root)
        todo.append((0, root, f"no feedback ({a.epochs} epochs)", 0))
    for n in sizes:
        root = work / f"n{n}"
        if not root.exists():
            copy_repo(repo, root)
        made, user = judge(model, proc, img, rows, n)
        path = root / JUDGED["path"]
        path.write_text("")
        store.append(path, made)
        todo.append((n, root, f"N={user['queries']} ({user['judgments']} judged, {user['ticks']} ✓)", a.weight))
    del model, img
    results = {} if a.epochs else {0: result(repo, float("nan"))}
    labels = {0: "no feedback (the repo's own metrics/)"}
    running: list = []
    while todo or running:
        while todo and len(running) < a.jobs:
            key, root, label, weight = todo.pop(0)
            labels[key] = label
            running.append((key, root, start_exp(root, work / f"{root.name}.log", a, weight), time.perf_counter()))
            print(f"bench_feedback_repo: {label}: dvc exp run started in {root}", flush=True)
        time.sleep(5)
        for item in list(running):
            key, root, proc_, started = item
            if proc_.poll() is None:
                continue
            running.remove(item)
            if proc_.returncode != 0:
                print(f"bench_feedback_repo: {labels[key]}: dvc exp run failed ({proc_.returncode}); see {root}.log")
                continue
            results[key] = result(root, time.perf_counter() - started)
            print(f"bench_feedback_repo: {labels[key]}: done in {results[key]['seconds']:.0f}s", flush=True)
    base = results.get(0)
    out = [row_of(labels[k], results[k], None if k == 0 else base) for k in sorted(results) if k == 0 or base]
    print(f"bench_feedback_repo: {repo} ; test split, 95 % bootstrap; {time.perf_counter() - t0:.0f}s in all")
    _emit(out, a.json)


if __name__ == "__main__":
    main()

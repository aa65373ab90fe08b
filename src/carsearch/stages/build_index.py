"""Stage build_index: embed every curated image with the fine-tuned model into LanceDB."""

from __future__ import annotations

import shutil

from carsearch.index import META_FILE, build_table, dir_hash
from carsearch.io import read_jsonl, write_json
from carsearch.model import encode_images, load_pretrained
from carsearch.params import load_params, run_stage
from carsearch.paths import repo_root, resolve


def main() -> None:
    params = load_params()
    root, paths, cfg = repo_root(), params["paths"], params["index"]
    pairs_dir = resolve(paths["pairs_dir"], root)
    rows = []
    for split in params["curate"]["splits"]:
        for r in read_jsonl(pairs_dir / f"{split}.jsonl"):
            rows.append({**r, "split": split})
    model_dir = resolve(paths["model_dir"], root)
    model, processor = load_pretrained(model_dir)
    vectors = encode_images(model, processor, [root / r["path"] for r in rows], progress=True)
    model_ref = f"{paths['model_dir']}@{dir_hash(model_dir)}"
    index_dir = resolve(paths["index_dir"], root)
    shutil.rmtree(index_dir, ignore_errors=True)
    _, kind = build_table(index_dir, cfg["table"], rows, vectors, model_ref, cfg)
    meta = {"table": cfg["table"], "metric": cfg["metric"], "model_dir": paths["model_dir"], "model_ref": model_ref,
            "rows": len(rows), "dim": int(vectors.shape[1]), "search": kind}
    write_json(index_dir / META_FILE, meta)
    write_json(resolve(paths["metrics_dir"], root) / "index.json", {"rows": len(rows), "dim": int(vectors.shape[1]), "model_ref": model_ref, "search": kind})
    print(f"build_index: {len(rows)} images into {paths['index_dir']}/{cfg['table']} ({kind}) with {model_ref}")


if __name__ == "__main__":
    run_stage(main)

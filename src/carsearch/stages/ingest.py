"""Stage ingest: images from the demo generator, a folder (or other sources) -> data/raw/ with a
manifest and a rejects file."""

from __future__ import annotations

import shutil
from collections import Counter

from tqdm import tqdm

from carsearch import data
from carsearch.io import write_json, write_jsonl
from carsearch.params import get, load_params, run_stage
from carsearch.paths import repo_root, resolve


def main() -> None:
    params = load_params()
    root = repo_root()
    paths, cfg = params["paths"], params["data"]
    source = get(params, "data.source")
    raw_dir = resolve(paths["raw_dir"], root)
    tmp_dir = raw_dir.with_name(raw_dir.name + ".tmp")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    images_tmp = tmp_dir / resolve(paths["images_dir"], root).relative_to(raw_dir)

    if source == "demo":
        d = cfg["demo"]
        items = data.demo_items(d["n_images"], d["size"], params["seed"], d.get("colors"))
        total = d["n_images"]
    elif source == "folder":
        f = cfg["folder"]
        items = data.iter_folder(resolve(f["path"], root), f.get("subfolder_key"), f.get("labels_csv", "labels.csv"))
        total = None
    elif source == "s3":
        f = cfg["s3"]
        items = data.iter_s3(f["uri"], f.get("subfolder_key"), f.get("labels_csv", "labels.csv"))
        total = None
    else:
        raise ValueError(f"data.source: unknown source {source!r} (expected demo, folder or s3)")

    items = tqdm(items, total=total, desc=f"ingest {source}", unit="img")
    rows, rejects = data.ingest_items(items, images_tmp, tmp_dir, source)
    # manifest paths are repo-relative
    prefix = raw_dir.relative_to(root).as_posix()
    for r in rows:
        r["path"] = f"{prefix}/{r['path']}"
    write_jsonl(tmp_dir / resolve(paths["manifest"], root).relative_to(raw_dir), rows)
    write_jsonl(tmp_dir / resolve(paths["rejects"], root).relative_to(raw_dir), [vars(r) for r in rejects])
    shutil.rmtree(raw_dir, ignore_errors=True)
    tmp_dir.rename(raw_dir)

    sheet = [(root / r["path"], r["labels"]) for r in rows]
    data.contact_sheet(sheet, resolve(paths["contact_sheet"], root))
    labelled = sum(1 for r in rows if r["labels"])
    reasons = Counter(r.reason.split(" (")[0] for r in rejects)
    write_json(resolve(paths["metrics_dir"], root) / "ingest.json",
               {"images": len(rows), "labelled": labelled, "rejected": len(rejects)})
    for r in rejects:
        print(f"rejected {r.path}: {r.reason}")
    print(f"ingest: {len(rows)} images ({labelled} labelled) from {source}; {len(rejects)} rejected"
          + (f" {dict(reasons)}" if reasons else ""))
    if not rows:
        raise ValueError(f"ingest: no usable images from source {source!r} (see {paths['rejects']})")


if __name__ == "__main__":
    run_stage(main)

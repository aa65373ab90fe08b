"""Stage list_corpus: the corpus build_index indexes, as a listing (path, size, mtime; S3: key,
size, ETag) in `paths.corpus_listing`, so DVC tracks one file instead of hashing every photo on
each `dvc status` (carsearch.sources.listing). Runs on every `dvc repro` (always_changed: a
listing costs one stat per file) and rewrites the listing only when the corpus changed, so an
unchanged corpus leaves build_index up to date."""

from __future__ import annotations

import time

from carsearch.core.params import load_params, run_stage
from carsearch.core.paths import repo_root, resolve
from carsearch.sources import listing


def main() -> None:
    params = load_params()
    root, cfg = repo_root(), params["index"]
    t = time.perf_counter()
    kind, where = cfg["corpus"], cfg["corpus_path"]
    if kind == "ingested":  # the ingest output: the manifest is what build_index reads
        where = params["paths"]["raw_dir"]
    if not where:
        raise ValueError(f"index.corpus_path: not set; index.corpus={kind} needs the folder or s3:// prefix to index")
    lines = listing.s3_lines(where) if kind == "s3" else listing.folder_lines(resolve(where, root))
    out = params["paths"]["corpus_listing"]
    n, total, changed = listing.write_listing(resolve(out, root), lines)
    print(
        f"list_corpus: {n} files, {total / 2**30:.2f} GB in {where} ({'changed' if changed else 'unchanged'}) "
        f"-> {out} in {time.perf_counter() - t:.1f} s"
    )


if __name__ == "__main__":
    run_stage(main)

"""What `build_index` indexes: the corpus, not the training set.

`ingested` (default): every image ingest kept, captioned or not, with its caption, attributes and
split where curate_pairs made a pair of it, and the source's labels where it has them. `folder` /
`s3`: the user's own photos, read with the same reader and reject rules as ingest and stored
(normalised, content-addressed) under the index's `images/` folder. No caption is needed to search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from carsearch.core.io import read_jsonl
from carsearch.core.paths import resolve
from carsearch.core.vocab import known
from carsearch.features import sources as data

CORPORA = ("ingested", "folder", "s3")


def pairs_by_id(pairs_dir: Path, splits: Iterable[str]) -> dict[str, dict]:
    out = {}
    for split in splits:
        f = Path(pairs_dir) / f"{split}.jsonl"
        for r in read_jsonl(f) if f.is_file() else []:
            out[r["id"]] = {**r, "split": split}
    return out


def ingested_rows(manifest: Path, pairs: dict[str, dict]) -> list[dict]:
    """Every manifest row, enriched with its curated pair (caption, attributes, split) if any."""
    rows = []
    for m in read_jsonl(manifest):
        p = pairs.get(m["id"], {})
        labels = known(m.get("labels")) or known(p.get("labels")) or known(p.get("attributes"))
        rows.append(_row(m, p, labels, m.get("origin") or m["path"]))
    return rows


def _row(image: dict, pair: dict, labels: dict, origin: str) -> dict:
    """An index row: the image (id, path) with its curated pair, if any (caption, attributes, split)."""
    return {
        "id": image["id"],
        "path": image["path"],
        "caption": pair.get("caption", ""),
        "attributes": pair.get("attributes") or {},
        "labels": labels,
        "split": pair.get("split", ""),
        "origin": origin,
    }


def source_items(kind: str, path: str, cfg: dict):
    """(name, bytes, labels, error) items of a folder or S3 corpus, as ingest reads them."""
    if kind == "folder":
        return data.iter_folder(Path(path), cfg["subfolder_key"], cfg["labels_csv"])
    if kind == "s3":
        return data.iter_s3(path, cfg["subfolder_key"], cfg["labels_csv"])
    raise ValueError(f"index.corpus: unknown corpus {kind!r} (expected one of {', '.join(CORPORA)})")


def stored_rows(items, images_dir: Path, root: Path, source: str, pairs: dict[str, dict] | None = None):
    """Store corpus images (same checks as ingest) and return (rows, rejects)."""
    rows, rejects = data.ingest_items(items, images_dir, root, source)
    out = []
    for r in rows:
        p = (pairs or {}).get(r["id"], {})
        out.append(_row(r, p, known(r.get("labels")) or known(p.get("labels")), r.get("origin") or ""))
    return out, [{"path": x.path, "reason": x.reason} for x in rejects]


def gather(params: dict, root: Path, images_dir: Path, progress=None) -> tuple[list[dict], list[dict]]:
    """(rows sorted by id, rejects) of the configured corpus."""
    cfg, paths = params["index"], params["paths"]
    kind = cfg["corpus"]
    pairs = pairs_by_id(resolve(paths["pairs_dir"], root), params["curate"]["splits"])
    if kind == "ingested":
        manifest = resolve(paths["manifest"], root)
        if not manifest.is_file():
            raise FileNotFoundError(f"index.corpus=ingested: {manifest} not found; run the ingest stage first")
        rows, rejects = ingested_rows(manifest, pairs), []
    else:
        where = cfg["corpus_path"]
        if not where:
            raise ValueError(
                f"index.corpus_path: not set; index.corpus={kind} needs the {'folder' if kind == 'folder' else 's3:// prefix'} to index"
            )
        items = source_items(kind, str(where if kind == "s3" else resolve(where, root)), cfg)
        rows, rejects = stored_rows(progress(items) if progress else items, images_dir, root, kind, pairs)
    rows.sort(key=lambda r: r["id"])
    return rows, rejects

"""Batch captioning: building Bedrock request files from the manifest (Claude or Nova format,
sharded to the batch-inference quotas, every line validated), and the offline backend that answers
them in exactly the `.jsonl.out` format Bedrock writes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from PIL import Image

from carsearch.captioning import formats
from carsearch.core import imaging
from carsearch.core.io import atomic_path, read_jsonl, write_bytes, write_json
from carsearch.core.schema import Caption

INDEX_NAME = "batch.json"  # written by make_jsonl next to the shards
IMAGES_SUBDIR = "images"  # Nova: resized images, uploaded next to each shard on S3

# Documented hard limits per family (the configured max_image_edge / max_image_bytes may be lower).
# Claude on Bedrock: <= 8000x8000 px, <= 3.75 MB an image; > 1568 px long edge is downscaled anyway.
# Nova Lite/Pro: <= 8000x8000 px; images are rescaled by the model; 25 MB request payload inline.
FAMILY_LIMITS = {
    "claude": {"max_edge": 8000, "max_bytes": 3_750_000, "formats": {"JPEG", "PNG", "WEBP", "GIF"}},
    "nova": {"max_edge": 8000, "max_bytes": 25_000_000, "formats": {"JPEG", "PNG", "WEBP", "GIF"}},
}
# Defaults of the Bedrock batch-inference quotas (Service Quotas; account-specific, check yours).


# ------------------------------------------------------------------------ images
def encode_image(
    path: Path, max_edge: int, quality: int = 90, max_bytes: int | None = None, allowed: set[str] | None = None
) -> bytes:
    """The image bytes to send: the original if within `max_edge`/`max_bytes` and an allowed
    format, else a resized JPEG (quality lowered, then size, until it fits `max_bytes`)."""
    data = Path(path).read_bytes()
    allowed = allowed or {"JPEG", "PNG", "WEBP", "GIF"}
    im, info = imaging.load(data, None)  # an ingested image: checked against data.max_pixels there
    with im:
        if (
            info.orientation == 1
            and info.mode in {"RGB", "L", "P", "RGBA", "LA", "PA"}
            and max(im.size) <= max_edge
            and info.format.upper() in allowed
            and (max_bytes is None or len(data) <= max_bytes)
        ):
            return data
        im = imaging.normalise(im)  # upright 8-bit RGB (EXIF orientation, 16-bit, alpha handled)
        edge = min(max_edge, max(im.size))
        while True:
            work = im.copy()
            work.thumbnail((edge, edge), Image.LANCZOS)
            for q in (quality, 80, 70, 60):
                buf = io.BytesIO()
                work.save(buf, format="JPEG", quality=q)
                if max_bytes is None or buf.tell() <= max_bytes:
                    return buf.getvalue()
            if edge <= 64:
                raise formats.FormatError(f"{path}: cannot shrink the image under {max_bytes} bytes")
            edge = int(edge * 0.75)


def image_limits(family: str, cfg: Caption) -> tuple[int, int]:
    lim = FAMILY_LIMITS[family]
    edge = min(int(cfg.max_image_edge or lim["max_edge"]), lim["max_edge"])
    nbytes = min(int(cfg.max_image_bytes or lim["max_bytes"]), lim["max_bytes"])
    return edge, nbytes


# ------------------------------------------------------------------------ request records
def wants_vehicles(cfg: Caption, row: dict | None) -> bool:
    """`caption.vehicles`: true for every image; auto for frames known to hold vehicles (a manifest
    row with boxes: rendered street frames, annotated folders); false never."""
    mode = cfg.vehicles
    return mode is True or (mode == "auto" and bool((row or {}).get("boxes")))


def prompts(cfg: Caption, image: bytes, row: dict | None = None) -> tuple[str, str, int]:
    """(system prompt, user prompt, max tokens) of one request: today's single caption, or (see
    `wants_vehicles`) every vehicle and its box, in pixels of `image` (the bytes as sent)."""
    if not wants_vehicles(cfg, row):
        return cfg.system_prompt, cfg.user_prompt, cfg.max_tokens
    with imaging.open_image(image) as im:
        width, height = im.size
    return (
        cfg.vehicles_system_prompt or formats.VEHICLES_SYSTEM_PROMPT,
        formats.vehicles_prompt(width, height),
        cfg.vehicles_max_tokens,
    )


def claude_records(manifest: Iterable[dict], root: Path, cfg: Caption) -> Iterator[dict]:
    edge, nbytes = image_limits("claude", cfg)
    for row in manifest:
        img = encode_image(root / row["path"], edge, max_bytes=nbytes)
        system, user, max_tokens = prompts(cfg, img, row)
        body = formats.claude_request(img, system, user, max_tokens, cfg.temperature)
        yield formats.request_record(row["id"], body)


SHARD_TOKEN = "{shard}"  # replaced by the shard stem when shards are cut (Nova image URIs)


def nova_records(
    manifest: Iterable[dict],
    root: Path,
    cfg: Caption,
    images_dir: Path,
    uri_prefix: str,
    bucket_owner: str | None = None,
) -> Iterator[dict]:
    """Nova records; each resized image is written to `images_dir/<id>.<ext>` and referenced as
    `<uri_prefix>/{shard}/images/<id>.<ext>` (the shard folder is filled in by `write_shards`)."""
    edge, nbytes = image_limits("nova", cfg)
    for row in manifest:
        img = encode_image(root / row["path"], edge, max_bytes=nbytes)
        fmt = formats.image_media_type(img).removeprefix("image/")
        ext = "jpg" if fmt == "jpeg" else fmt
        write_bytes(images_dir / f"{row['id']}.{ext}", img)
        uri = f"{uri_prefix}/{SHARD_TOKEN}/{IMAGES_SUBDIR}/{row['id']}.{ext}"
        system, user, max_tokens = prompts(cfg, img, row)
        body = formats.nova_request(uri, fmt, system, user, max_tokens, cfg.temperature, bucket_owner=bucket_owner)
        yield formats.request_record(row["id"], body)


def batch_key(
    model_id: str, family: str, ids: list[str], cfg: Caption, bucket: str | None, prefix: str, vehicles: bool = False
) -> str:
    """A short hash of everything that determines the request files (names the S3 folder);
    `vehicles`: some request asks for every vehicle (`wants_vehicles`)."""
    keyed = {
        k: getattr(cfg, k)
        for k in ("system_prompt", "user_prompt", "max_tokens", "temperature", "max_image_edge", "max_image_bytes")
    }
    if vehicles:  # only then: the single-caption key stays what it was
        keyed.update({k: getattr(cfg, k) for k in ("vehicles", "vehicles_system_prompt", "vehicles_max_tokens")})
    blob = json.dumps(
        {"model_id": model_id, "family": family, "ids": ids, "cfg": keyed, "bucket": bucket, "prefix": prefix},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def s3_layout(bucket: str, prefix: str, key: str, stem: str) -> dict:
    """Where one shard lives on S3: its input folder (jsonl + Nova images) and its output folder."""
    base = "/".join(p for p in (prefix.strip("/"), key) if p)
    return {"input": f"s3://{bucket}/{base}/input/{stem}/", "output": f"s3://{bucket}/{base}/output/{stem}/"}


# ------------------------------------------------------------------------ sharding to quotas
def plan_shards(
    sizes: list[int], max_records: int, max_bytes: int, record_ids: list[str] | None = None
) -> list[tuple[int, int]]:
    """Split records (line sizes in bytes, in order) into the fewest contiguous, evenly sized
    shards with <= `max_records` records and <= `max_bytes` bytes each."""
    total = len(sizes)
    if total == 0:
        return []
    for i, s in enumerate(sizes):
        if s > max_bytes:
            who = record_ids[i] if record_ids else f"#{i}"
            raise formats.FormatError(f"record {who!r}: {s} bytes, over caption.quotas.max_file_bytes={max_bytes}")
    prefix = [0]
    for s in sizes:
        prefix.append(prefix[-1] + s)
    n = max(1, math.ceil(total / max_records), math.ceil(prefix[-1] / max_bytes))
    while True:
        bounds = [(total * k // n, total * (k + 1) // n) for k in range(n)]
        if all(prefix[b] - prefix[a] <= max_bytes for a, b in bounds):
            return bounds
        n += 1


@dataclass
class Shard:
    file: str
    records: int
    bytes: int
    sha256: str
    below_min: bool = False
    s3: dict = field(default_factory=dict)


def write_shards(
    records: Iterable[dict],
    out_dir: Path,
    per_file: int | None = None,
    stem: str = "part",
    family: str = "claude",
    *,
    quotas: dict,
) -> list[Path]:
    """Write records into `out_dir/<stem>-NNNNN.jsonl` (see `cut_shards`)."""
    return [out_dir / s.file for s in cut_shards(records, out_dir, per_file, stem, family, quotas=quotas)]


def cut_shards(
    records: Iterable[dict],
    out_dir: Path,
    per_file: int | None = None,
    stem: str = "part",
    family: str = "claude",
    *,
    quotas: dict,
    finalize: Callable[[dict, str], dict] | None = None,
) -> list[Shard]:
    """Write records into `out_dir/<stem>-NNNNN.jsonl`, cut to the quotas (max records a job, max
    file size; a shard under the minimum records a job is flagged `below_min`), every line
    validated against the family's schema before it is written."""
    q = dict(quotas)  # caption.quotas (conf/caption/*.yaml)
    if per_file:
        q["max_records_per_job"] = min(int(per_file), int(q["max_records_per_job"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    spool, sizes, ids = out_dir / ".spool.jsonl", [], []
    try:
        with open(spool, "w", encoding="utf-8") as f:
            for rec in records:
                line = formats.dumps(rec) + "\n"
                f.write(line)
                sizes.append(len(line.encode("utf-8")))
                ids.append(rec["recordId"])
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise formats.FormatError(f"record {dup!r}: duplicate recordId")
        bounds = plan_shards(sizes, int(q["max_records_per_job"]), int(q["max_file_bytes"]), ids)
        shards = []
        with open(spool, encoding="utf-8") as f:
            for k, (a, b) in enumerate(bounds):
                name = f"{stem}-{k:05d}"
                p = out_dir / f"{name}.jsonl"
                h, nbytes = hashlib.sha256(), 0
                with atomic_path(p) as tmp, open(tmp, "w", encoding="utf-8") as w:
                    for lineno in range(a, b):
                        rec = json.loads(f.readline())
                        if finalize is not None:
                            rec = finalize(rec, name)
                        formats.validate_record(rec, family, where=f"{p.name}:{lineno - a + 1}")
                        line = (formats.dumps(rec) + "\n").encode("utf-8")
                        if nbytes + len(line) > int(q["max_file_bytes"]):
                            raise formats.FormatError(
                                f"{p.name}: over caption.quotas.max_file_bytes after filling in URIs"
                            )
                        h.update(line)
                        nbytes += len(line)
                        w.write(line.decode("utf-8"))
                shards.append(
                    Shard(p.name, b - a, nbytes, h.hexdigest(), below_min=(b - a) < int(q["min_records_per_job"]))
                )
        return shards
    finally:
        spool.unlink(missing_ok=True)


def make_requests(
    manifest: list[dict],
    root: Path,
    out_dir: Path,
    cfg: Caption,
    bucket: str | None = None,
    progress: Callable[[Iterable], Iterable] | None = None,
) -> dict:
    """Build the request shards for the configured model family, plus `batch.json` (the index
    caption_batch reads: family, S3 layout, per-shard record counts and content hashes)."""
    family = formats.model_family(cfg.model_id, cfg.family)
    prefix, quotas = str(cfg.s3.prefix), cfg.quotas.as_dict()  # recorded in batch.json
    ids = [r["id"] for r in manifest]
    key = batch_key(cfg.model_id, family, ids, cfg, bucket, prefix, any(wants_vehicles(cfg, r) for r in manifest))
    rows = progress(manifest) if progress else manifest
    finalize = None
    if family == "claude":
        records = claude_records(rows, root, cfg)
    else:
        if not bucket:
            raise ValueError(
                "caption.s3.bucket: not set, and Nova requests name their images by S3 URI "
                "(set caption.s3.bucket, or $CARSEARCH_BUCKET)"
            )
        base = "/".join(p for p in (prefix.strip("/"), key) if p)
        records = nova_records(
            rows, root, cfg, out_dir / IMAGES_SUBDIR, f"s3://{bucket}/{base}/input", cfg.s3.bucket_owner
        )

        def finalize(rec: dict, shard: str) -> dict:
            for msg in rec["modelInput"]["messages"]:
                for block in msg["content"]:
                    loc = (block.get("image") or {}).get("source", {}).get("s3Location")
                    if loc:
                        loc["uri"] = loc["uri"].replace(SHARD_TOKEN, shard)
            return rec

    shards = cut_shards(records, out_dir, cfg.records_per_file, family=family, quotas=quotas, finalize=finalize)
    for s in shards:
        s.s3 = s3_layout(bucket, prefix, key, Path(s.file).stem) if bucket else {}
    index = {
        "model_id": cfg.model_id,
        "family": family,
        "batch_key": key,
        "bucket": bucket,
        "prefix": prefix,
        "quotas": quotas,
        "records": len(ids),
        "shards": [asdict(s) for s in shards],
    }
    write_json(out_dir / INDEX_NAME, index)
    return index


def load_index(jsonl_dir: Path) -> dict | None:
    p = jsonl_dir / INDEX_NAME
    return json.loads(p.read_text()) if p.is_file() else None


def image_uris(path: Path) -> list[str]:
    """The S3 image URIs a (Nova) request file references."""
    uris = []
    for rec in read_jsonl(path):
        for msg in rec["modelInput"].get("messages", []):
            for block in msg.get("content", []):
                loc = (
                    (block.get("image") or {}).get("source", {}).get("s3Location") if isinstance(block, dict) else None
                )
                if loc:
                    uris.append(loc["uri"])
    return uris


# ------------------------------------------------------------------------ offline backend
NOVA_IMAGE_TOKENS = 1300  # estimate for an image referenced by S3 (not read offline)


def estimate_input_tokens(model_input: dict, image_tokens: int | None = None) -> int:
    """Anthropic's documented estimate for images (w*h/750) plus ~4 characters a text token."""
    system = model_input.get("system") or ""
    if isinstance(system, list):
        system = " ".join(b.get("text", "") for b in system if isinstance(b, dict))
    tokens = len(system) // 4
    for msg in model_input.get("messages", []):
        for block in msg.get("content", []):
            if block.get("type") == "text" or ("text" in block and "type" not in block):
                tokens += len(block.get("text", "")) // 4
            elif block.get("type") == "image":
                with imaging.open_image(base64.b64decode(block["source"]["data"])) as im:
                    tokens += (im.size[0] * im.size[1]) // 750
            elif "image" in block:
                tokens += image_tokens if image_tokens is not None else NOVA_IMAGE_TOKENS
    return max(tokens, 1)

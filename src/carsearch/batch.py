"""Batch captioning: building Bedrock request files from the manifest, and the offline backend
that answers them in exactly the `.jsonl.out` format Bedrock writes."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterable, Iterator

from PIL import Image

from . import formats
from .captions import offline_caption
from .io import read_jsonl, write_json, write_jsonl

REQUIRED_LABELS = ("body_type", "color", "view")


def encode_image(path: Path, max_edge: int, quality: int = 90) -> bytes:
    """The image bytes to send: the original if within `max_edge`, else a resized JPEG."""
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        if max(im.size) <= max_edge and (im.format or "").upper() in {"JPEG", "PNG", "WEBP", "GIF"}:
            return data
        im = im.convert("RGB")
        im.thumbnail((max_edge, max_edge), Image.LANCZOS)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=quality)
        return buf.getvalue()


def claude_records(manifest: Iterable[dict], root: Path, cfg: dict) -> Iterator[dict]:
    for row in manifest:
        img = encode_image(root / row["path"], cfg["max_image_edge"])
        body = formats.claude_request(img, cfg["system_prompt"], cfg["user_prompt"], cfg["max_tokens"], cfg.get("temperature"))
        yield formats.request_record(row["id"], body)


def write_shards(records: Iterable[dict], out_dir: Path, per_file: int, stem: str = "part") -> list[Path]:
    """Write records into `out_dir/<stem>-NNNNN.jsonl`, at most `per_file` records a file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, buf = [], []

    def flush():
        p = out_dir / f"{stem}-{len(paths):05d}.jsonl"
        write_jsonl(p, buf)
        paths.append(p)
        buf.clear()

    for rec in records:
        buf.append(rec)
        if len(buf) >= per_file:
            flush()
    if buf:
        flush()
    return paths


# ------------------------------------------------------------------------ offline backend
def estimate_input_tokens(model_input: dict) -> int:
    """Anthropic's documented estimate for images (w*h/750) plus ~4 characters a text token."""
    tokens = len(model_input.get("system") or "") // 4
    for msg in model_input.get("messages", []):
        for block in msg.get("content", []):
            if block.get("type") == "text":
                tokens += len(block.get("text", "")) // 4
            elif block.get("type") == "image":
                import base64

                with Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))) as im:
                    tokens += (im.size[0] * im.size[1]) // 750
    return max(tokens, 1)


def offline_output(record: dict, labels: dict | None, model_id: str) -> dict:
    """The `.jsonl.out` line for one request: a Claude response from known labels, or a record
    error (as Bedrock reports failed records) when the image has no usable labels."""
    rid, body = record["recordId"], record["modelInput"]
    missing = [k for k in REQUIRED_LABELS if not (labels or {}).get(k)]
    if missing:
        return formats.output_record(rid, body, error={
            "errorCode": 400,
            "errorMessage": f"offline captioner: image has no known {', '.join(missing)} label(s)",
        })
    text = json.dumps(offline_caption(labels, rid))
    out = formats.claude_response(text, model_id, estimate_input_tokens(body), max(1, len(text) // 4))
    return formats.output_record(rid, body, model_output=out)


def run_offline(input_files: list[Path], out_dir: Path, labels_by_id: dict[str, dict | None], model_id: str, progress: bool = True) -> dict:
    """Answer every input file into `out_dir/<name>.jsonl.out` plus `manifest.json.out`."""
    from tqdm import tqdm

    totals = {"totalRecordCount": 0, "processedRecordCount": 0, "successRecordCount": 0,
              "errorRecordCount": 0, "inputTokenCount": 0, "outputTokenCount": 0}
    for path in input_files:
        out_rows = []
        for rec in tqdm(list(read_jsonl(path)), desc=f"caption {path.name}", disable=not progress, unit="rec"):
            out = offline_output(rec, labels_by_id.get(rec["recordId"]), model_id)
            totals["totalRecordCount"] += 1
            totals["processedRecordCount"] += 1
            if "error" in out:
                totals["errorRecordCount"] += 1
            else:
                totals["successRecordCount"] += 1
                i, o = formats.usage_tokens(out["modelOutput"])
                totals["inputTokenCount"] += i
                totals["outputTokenCount"] += o
            out_rows.append(out)
        write_jsonl(out_dir / f"{path.name}.out", out_rows)
    write_json(out_dir / "manifest.json.out", totals)
    return totals

"""make_jsonl's library: image limits, sharding to the quotas, validation before writing, offline outputs."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from carsearch.captioning import formats, offline
from carsearch.captioning import requests as batch
from conftest_bedrock import caption_cfg, make_image_set

QUOTAS = caption_cfg().quotas.as_dict()  # conf/caption: the batch-inference quotas


def test_images_are_resized_to_the_limits(tmp_path):
    p = tmp_path / "big.png"
    Image.effect_noise((3000, 2000), 60).convert("RGB").save(p)
    data = batch.encode_image(p, 1568, max_bytes=200_000)
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and max(im.size) <= 1568
    assert len(data) <= 200_000
    small = tmp_path / "small.png"
    Image.new("RGB", (40, 30)).save(small)
    assert batch.encode_image(small, 1568) == small.read_bytes()  # untouched when within limits
    bmp = tmp_path / "x.bmp"
    Image.new("RGB", (40, 30)).save(bmp)
    assert formats.image_media_type(batch.encode_image(bmp, 1568)) == "image/jpeg"  # unsupported format converted


def test_plan_shards_respects_max_records_and_bytes_evenly():
    assert batch.plan_shards([10] * 12, 5, 10**9) == [(0, 4), (4, 8), (8, 12)]
    bounds = batch.plan_shards([100] * 10, 50, 350)
    assert all((b - a) * 100 <= 350 for a, b in bounds) and bounds[-1][1] == 10 and len(bounds) == 4
    with pytest.raises(formats.FormatError, match="record 'r1': 500 bytes, over caption.quotas.max_file_bytes"):
        batch.plan_shards([10, 500], 5, 100, ["r0", "r1"])


def test_make_requests_claude_shards_index_and_min_flag(tmp_path):
    rows = make_image_set(tmp_path, 7)
    cfg = caption_cfg(**{"quotas.max_records_per_job": 3, "quotas.min_records_per_job": 3})
    index = batch.make_requests(rows, tmp_path, tmp_path / "jsonl", cfg)
    assert index["family"] == "claude" and [s["records"] for s in index["shards"]] == [2, 2, 3]
    assert [s["below_min"] for s in index["shards"]] == [True, True, False]
    lines = [json.loads(x) for f in sorted((tmp_path / "jsonl").glob("*.jsonl")) for x in f.read_text().splitlines()]
    assert [x["recordId"] for x in lines] == [r["id"] for r in rows]  # every record, in order, once
    assert not (tmp_path / "jsonl" / ".spool.jsonl").exists()


def test_make_requests_nova_writes_images_and_uris(tmp_path):
    rows = make_image_set(tmp_path, 4)
    cfg = caption_cfg(**{"model_id": "amazon.nova-lite-v1:0", "s3.prefix": "cs"})
    index = batch.make_requests(rows, tmp_path, tmp_path / "jsonl", cfg, bucket="my-bucket")
    uris = batch.image_uris(tmp_path / "jsonl" / "part-00000.jsonl")
    assert len(uris) == 4 and all(
        u.startswith(f"s3://my-bucket/cs/{index['batch_key']}/input/part-00000/images/") for u in uris
    )
    assert all((tmp_path / "jsonl" / "images" / u.rsplit("/", 1)[-1]).is_file() for u in uris)
    with pytest.raises(ValueError, match="caption.s3.bucket: not set"):
        batch.make_requests(rows, tmp_path, tmp_path / "j2", cfg, bucket=None)


def test_invalid_line_is_never_written(tmp_path):
    bad = {"recordId": "r1", "modelInput": {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "messages": []}}
    with pytest.raises(formats.FormatError, match="part-00000.jsonl:1 record 'r1': messages"):
        batch.write_shards([bad], tmp_path, quotas=QUOTAS)
    assert not list(tmp_path.glob("*.jsonl"))
    with pytest.raises(formats.FormatError, match="duplicate recordId"):
        good = formats.request_record(
            "r1", formats.claude_request(b"\x89PNG" + b"0" * 10, "s", "u", media_type="image/png")
        )
        batch.write_shards([good, good], tmp_path, quotas=QUOTAS)


def test_offline_output_per_family(tmp_path):
    labels = {"body_type": "suv", "color": "red", "view": "front"}
    nova = {"recordId": "r", "modelInput": formats.nova_request("s3://bucket-x/k.jpg", "jpeg", "s", "u")}
    out = offline.offline_output(nova, labels, "amazon.nova-lite-v1:0")
    assert "output" in out["modelOutput"] and formats.usage_tokens(out["modelOutput"])[0] > 0
    partial = offline.offline_output(nova, {"color": "red"}, "amazon.nova-lite-v1:0")  # partial labels are labels
    cap = json.loads(formats.response_text(partial["modelOutput"]))
    assert cap["color"] == "red" and cap["body_type"] == cap["view"] == "unknown" and "red car" in cap["caption"]
    for none in (None, {}, {"color": "unknown", "scene": "day"}):
        err = offline.offline_output(nova, none, "amazon.nova-lite-v1:0")
        assert err["error"]["errorCode"] == 400 and "has no labels" in err["error"]["errorMessage"]

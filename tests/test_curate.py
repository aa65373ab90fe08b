"""curate: every requested record ends up in a split or in the rejects with its reason."""

from __future__ import annotations

import json

from carsearch.captioning import formats
from carsearch.curation.curate import curate
from conftest_bedrock import make_image_set
from testkit import section

CFG = section(
    "curate",
    **{
        "splits": {"train": 0.7, "val": 0.1, "test": 0.2},
        "near_duplicate_max_distance": -1,
        "require_fields": ["body_type", "color", "view"],
    },
)
GOOD = '{"make": "Acme", "model": "X", "body_type": "suv", "color": "red", "view": "front", "caption": "A red SUV from the front."}'


def test_every_kind_of_bad_output_is_reported(tmp_path):
    rows = make_image_set(tmp_path, 10)
    ids = [r["id"] for r in rows]
    inp = tmp_path / "part-00000.jsonl"
    inp.write_text("".join(json.dumps({"recordId": i, "modelInput": {}}) + "\n" for i in ids))
    mid = "anthropic.claude-3-haiku-20240307-v1:0"

    def line(rid, text=GOOD, stop="end_turn", **kw):
        out = formats.output_record(rid, {}, model_output=formats.claude_response(text, mid, 5, 5, stop), **kw)
        return json.dumps(out)

    lines = [
        line(ids[0]),
        line(ids[1], "I can't identify this.", stop="refusal"),
        line(ids[2], "A red SUV, I think."),
        line(
            ids[3],
            '{"make": "Acme", "model": "X", "body_type": "suv", "color": "red", "view": "front", "caption": "A red',
            stop="max_tokens",
        ),
        line(ids[4], GOOD.replace('"view": "front", ', "")),
        json.dumps(formats.output_record(ids[5], {}, error={"errorCode": 429, "errorMessage": "Too many tokens"})),
        line(ids[6])[:40],  # truncated: recordId still readable
        "{garbage",  # malformed: no recordId
        line("not-requested"),
        line(ids[8], GOOD.replace('"view": "front"', '"view": "unknown"')),
        # ids[7] and ids[9]: missing
    ]
    out = tmp_path / "part-00000.jsonl.out"
    out.write_text("\n".join(lines) + "\n")
    jobs = {"part-00000.jsonl": {"jobName": "cs-1", "status": "PartiallyCompleted"}}
    by_split, rejects = curate([inp], [out], {r["id"]: r for r in rows}, tmp_path, CFG, 0, jobs=jobs)
    why = {r.get("id") or r.get("where"): r["reason"] for r in rejects}
    assert sum(len(v) for v in by_split.values()) == 1
    assert "refused" in why[ids[1]]
    assert "no JSON object" in why[ids[2]]
    assert "token limit" in why[ids[3]]
    assert "field 'view'" in why[ids[4]]
    assert why[ids[5]] == "model error 429: Too many tokens"
    assert why[ids[6]].startswith("bad output line") and ids[6] in why[ids[6]]
    assert why["part-00000.jsonl.out:8"].startswith("bad output line")
    assert why["not-requested"] == "output record with no matching input record"
    assert "missing from part-00000.jsonl.out" in why[ids[7]] and "missing" in why[ids[9]]
    assert why[ids[8]] == "caption lacks view"
    assert {i for i in ids[1:]} <= set(why)  # nothing silently dropped


def test_missing_records_name_the_failed_job(tmp_path):
    rows = make_image_set(tmp_path, 2)
    inp = tmp_path / "part-00003.jsonl"
    inp.write_text("".join(json.dumps({"recordId": r["id"], "modelInput": {}}) + "\n" for r in rows))
    jobs = {"part-00003.jsonl": {"jobName": "cs-3", "status": "Failed", "message": "Access denied to s3://b"}}
    _, rejects = curate([inp], [], {r["id"]: r for r in rows}, tmp_path, CFG, 0, jobs=jobs)
    assert all("job cs-3 Failed (Access denied to s3://b)" in r["reason"] for r in rejects) and len(rejects) == 2

"""The caption cache: a re-run sends only records never answered before, on all three backends
(Bedrock over real boto3/HTTP against the emulator + moto S3, the OpenAI-compatible emulator, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from carsearch.captioning import cache as caption_cache
from carsearch.captioning.cache import CaptionCache
from carsearch_emulators import ChatCompletionsEmulator
from conftest_bedrock import aws_env, bucket, caption_cfg, emulator, make_image_set, moto_url, s3  # noqa: F401
from testkit import composed_params

REPO = Path(__file__).resolve().parents[1]


def _scratch(tmp_path: Path, monkeypatch, n: int, **caption_over) -> tuple[Path, list[dict]]:
    root = tmp_path / "repo"
    rows = make_image_set(root, n)
    (root / "dvc.yaml").write_text("stages: {}\n")
    paths = yaml.safe_load((REPO / "conf/paths/default.yaml").read_text())
    caption = caption_cfg(**{"quotas.min_records_per_job": 5, **caption_over}).as_dict()
    caption["pricing"] = str(REPO / "conf/pricing.yaml")
    (root / "params.yaml").write_text(yaml.safe_dump(composed_params({"seed": 42, "paths": paths, "caption": caption})))
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    return root, rows


def _set(root: Path, key: str, value) -> None:
    p = yaml.safe_load((root / "params.yaml").read_text())
    cur = p["caption"]
    *path, last = key.split(".")
    for k in path:
        cur = cur[k]
    cur[last] = value
    (root / "params.yaml").write_text(yaml.safe_dump(p))


def _caption(root: Path) -> dict:
    from carsearch.stages import caption_batch, make_jsonl

    make_jsonl.main()
    caption_batch.main()
    return json.loads((root / "metrics/caption.json").read_text())


def _outputs(root: Path) -> dict[str, dict]:
    out = {}
    for p in sorted((root / "data/captions").glob("*.jsonl.out")):
        for line in p.read_text().splitlines():
            rec = json.loads(line)
            out[rec["recordId"]] = rec
    return out


def _creates(emu) -> int:
    return sum(1 for m, p in emu.calls if m == "POST" and p == "/model-invocation-job")


def test_bedrock_sends_only_new_records(tmp_path, monkeypatch, emulator, bucket):
    root, rows = _scratch(
        tmp_path, monkeypatch, 20, **{"backend": "bedrock", "s3.bucket": bucket, "quotas.max_records_per_job": 12}
    )
    rows30 = make_image_set(tmp_path / "all", 30)
    emu = emulator(labels={r["id"]: r["labels"] for r in rows30})
    cap = _caption(root)
    assert cap["sent"] == 20 and cap["cached"] == 0 and cap["jobs"] == 2 and sum(map(len, emu.received.values())) == 20
    first_usd = cap["estimated_usd"]

    rows = make_image_set(root, 30)  # the same 20 images + 10 new ones
    new = {r["id"] for r in rows[20:]}
    before = dict(emu.received)
    cap = _caption(root)
    got = [rid for name, ids in emu.received.items() if name not in before for rid in ids]
    assert sorted(got) == sorted(new)  # exactly the 10 new records reached Bedrock
    assert (
        cap["records"] == 30
        and cap["cached"] == 20
        and cap["sent"] == 10
        and cap["succeeded"] == 30
        and cap["failed"] == 0
    )
    assert 0 < cap["estimated_usd"] < first_usd and cap["estimated_usd_cached_saved"] > 0
    assert cap["cached_input_tokens"] > 0 and cap["input_tokens"] > 0
    outs = _outputs(root)
    assert set(outs) == {r["id"] for r in rows} and all("modelOutput" in o for o in outs.values())
    # the shards on S3 held only the new records, and Bedrock's manifest counts only those
    assert json.loads((root / "data/captions/manifest.json.out").read_text())["totalRecordCount"] == 10

    n_jobs = _creates(emu)
    cap = _caption(root)  # nothing new: no job, no upload
    assert _creates(emu) == n_jobs and cap["sent"] == 0 and cap["cached"] == 30 and cap["jobs"] == 0
    assert cap["estimated_usd"] == 0 and cap["succeeded"] == 30 and set(_outputs(root)) == set(outs)


def test_bedrock_errors_and_refusals_are_retried_bad_captions_are_not(tmp_path, monkeypatch, emulator, bucket):
    root, rows = _scratch(
        tmp_path, monkeypatch, 8, **{"backend": "bedrock", "s3.bucket": bucket, "bedrock.allow_incomplete": True}
    )
    a, b, c = rows[0]["id"], rows[1]["id"], rows[2]["id"]
    emu = emulator(
        labels={r["id"]: r["labels"] for r in rows},
        refuse={a},
        record_errors={b: (500, "boom")},
        answers={c: "a red car, I think"},
    )
    cap = _caption(root)
    assert cap["sent"] == 8 and cap["cache_entries_written"] == 6
    emu.refuse.clear()
    emu.record_errors.clear()
    before = dict(emu.received)
    _set(root, "quotas.min_records_per_job", 1)
    cap = _caption(root)
    got = [rid for name, ids in emu.received.items() if name not in before for rid in ids]
    assert sorted(got) == sorted([a, b]) and cap["cached"] == 6 and cap["sent"] == 2 and cap["succeeded"] == 8
    assert "a red car" in json.dumps(_outputs(root)[c]["modelOutput"])  # the unparseable answer was replayed


def test_bedrock_small_remainder_is_refused_or_padded(tmp_path, monkeypatch, emulator, bucket):
    import pytest

    from carsearch.captioning.parse import CaptionError

    root, rows = _scratch(tmp_path, monkeypatch, 10, **{"backend": "bedrock", "s3.bucket": bucket})
    rows12 = make_image_set(tmp_path / "all", 12)
    emu = emulator(labels={r["id"]: r["labels"] for r in rows12})
    _caption(root)
    make_image_set(root, 12)
    with pytest.raises(CaptionError, match="min_records_per_job=5.*pad_small_jobs"):
        _caption(root)
    _set(root, "cache.pad_small_jobs", True)
    before = dict(emu.received)
    cap = _caption(root)
    got = [rid for name, ids in emu.received.items() if name not in before for rid in ids]
    assert len(got) == 5 and {r["id"] for r in rows12[10:]} <= set(got)
    assert cap["padded"] == 3 and cap["sent"] == 5 and cap["succeeded"] == 12


def test_openai_sends_only_new_records(tmp_path, monkeypatch):
    rows30 = make_image_set(tmp_path / "all", 30)
    with ChatCompletionsEmulator(labels={r["id"]: r["labels"] for r in rows30}) as emu:
        root, rows = _scratch(
            tmp_path,
            monkeypatch,
            20,
            **{
                "backend": "openai",
                "family": "claude",
                "model_id": "local-vlm",
                "openai.base_url": emu.url,
                "openai.model": "qwen2.5-vl",
            },
        )
        cap = _caption(root)
        assert len(emu.requests) == 20 and cap["sent"] == 20 and cap["cached"] == 0
        make_image_set(root, 30)
        cap = _caption(root)
        assert sorted(r["user"] for r in emu.requests[20:]) == sorted(r["id"] for r in rows30[20:])
        assert cap["records"] == 30 and cap["cached"] == 20 and cap["sent"] == 10 and cap["succeeded"] == 30
        assert cap["input_tokens"] == 10 * 500 and cap["cached_input_tokens"] == 20 * 500
        _set(root, "openai.model", "another-vlm")  # a different served model: everything again
        cap = _caption(root)
        assert len(emu.requests) == 60 and cap["sent"] == 30 and cap["cached"] == 0
    assert len(_outputs(root)) == 30


def test_offline_counts_invalidation_and_survival(tmp_path, monkeypatch):
    import shutil

    root, rows = _scratch(tmp_path, monkeypatch, 20)
    cap = _caption(root)
    assert (cap["sent"], cap["cached"]) == (20, 0)
    first = cap["estimated_usd"]
    make_image_set(root, 30)
    cap = _caption(root)
    assert (cap["records"], cap["sent"], cap["cached"], cap["succeeded"]) == (30, 10, 20, 30)
    assert cap["estimated_usd"] < first and cap["input_tokens"] < cap["cached_input_tokens"]
    outs = _outputs(root)

    # the cache lives outside what the stage deletes and rewrites
    shutil.rmtree(root / "data/captions")
    shutil.rmtree(root / "data/jsonl")
    cap = _caption(root)
    assert (cap["sent"], cap["cached"]) == (0, 30) and _outputs(root) == outs

    # a changed label (the offline captioner answers from labels) re-sends that record only
    man = [json.loads(x) for x in (root / "data/raw/manifest.jsonl").read_text().splitlines()]
    man[0]["labels"]["color"] = "green" if man[0]["labels"]["color"] != "green" else "red"
    (root / "data/raw/manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in man))
    assert _caption(root)["sent"] == 1

    # a changed prompt or model id is a different request: everything is sent again
    _set(root, "system_prompt", "Describe the car as JSON.")
    assert (_caption(root)["sent"], _caption(root)["sent"]) == (30, 0)
    _set(root, "model_id", "anthropic.claude-3-5-haiku-20241022-v1:0")
    assert _caption(root)["sent"] == 30
    _set(root, "max_tokens", 200)
    assert _caption(root)["sent"] == 30

    # switched off: everything is sent, nothing read or written
    _set(root, "cache.enabled", False)
    cap = _caption(root)
    assert (cap["sent"], cap["cached"], cap["cache"]) == (30, 0, "off")


def test_store_keys_torn_lines_and_compaction(tmp_path, monkeypatch):
    rec = {
        "recordId": "r1",
        "modelInput": {
            "schemaVersion": "messages-v1",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "image": {
                                "format": "jpeg",
                                "source": {"s3Location": {"uri": "s3://b/p/KEY1/input/part-00000/images/r1.jpg"}},
                            }
                        },
                        {"text": "describe"},
                    ],
                }
            ],
        },
    }
    moved = json.loads(json.dumps(rec).replace("KEY1/input/part-00000", "KEY2/input/part-00003"))
    ctx = {"backend": "bedrock", "model": "amazon.nova-lite-v1:0"}
    assert caption_cache.record_key(rec, ctx) == caption_cache.record_key(moved, ctx)  # batch folder is not the request
    assert caption_cache.record_key(rec, ctx) != caption_cache.record_key(rec, {**ctx, "model": "amazon.nova-pro-v1:0"})

    ok = {
        "recordId": "r1",
        "modelOutput": {
            "stop_reason": "end_turn",
            "content": [{"type": "text", "text": "{}"}],
            "usage": {"input_tokens": 5, "output_tokens": 2},
        },
    }
    refusal = {"recordId": "r2", "modelOutput": {**ok["modelOutput"], "stop_reason": "refusal"}}
    error = {"recordId": "r3", "error": {"errorCode": 500, "errorMessage": "x"}}
    monkeypatch.setattr(caption_cache, "COMPACT_AT", 3)
    keys = []
    for i in range(5):  # a segment a run; the fourth close finds 4 > COMPACT_AT and merges them
        with CaptionCache(tmp_path / "c", ctx) as c:
            k = f"{i:064x}"
            keys.append(k)
            assert c.add(k, {**ok, "recordId": f"r{i}"}) and not c.add("f" * 64, refusal) and not c.add("e" * 64, error)
    assert len(list((tmp_path / "c/segments").glob("*.jsonl"))) == 2
    with CaptionCache(tmp_path / "c", ctx) as busy:  # a writer still holding its segment is left alone
        busy.add("b" * 64, ok)
        assert CaptionCache(tmp_path / "c", ctx).compact() == 2
    segs = sorted((tmp_path / "c/segments").glob("*.jsonl"))
    assert len(segs) == 2 and any("compact" in s.name for s in segs)
    keys.append("b" * 64)
    with open(next(s for s in segs if "compact" in s.name), "a") as f:
        f.write('{"key": "' + "a" * 64 + '", "recordId": "torn", "modelOut')  # a writer killed mid-line
    c = CaptionCache(tmp_path / "c", ctx)
    found = c.lookup(keys + ["a" * 64, "f" * 64])
    assert sorted(found) == sorted(keys) and found[keys[2]]["recordId"] == "r2"

"""caption.backend=openai against a local chat-completions EMULATOR (carsearch_emulators, not OpenAI)."""

from __future__ import annotations

import json

import pytest

from carsearch.captioning import openai_compat
from carsearch.captioning import requests as batch
from carsearch.captioning.parse import CaptionError
from carsearch.curation.curate import curate
from carsearch_emulators import ChatCompletionsEmulator
from conftest_bedrock import caption_cfg, make_image_set
from testkit import section

CURATE = section(
    "curate",
    **{
        "splits": {"train": 0.7, "val": 0.1, "test": 0.2},
        "near_duplicate_max_distance": -1,
        "require_fields": ["body_type", "color", "view"],
    },
)


def test_bounded_concurrency_retries_and_bedrock_shaped_output(tmp_path):
    rows = make_image_set(tmp_path, 12, unlabelled=1)
    cfg = caption_cfg(**{"family": "claude", "model_id": "local-vlm"})
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", cfg)
    inputs = sorted((tmp_path / "jsonl").glob("*.jsonl"))
    with ChatCompletionsEmulator(
        labels={r["id"]: r["labels"] for r in rows}, latency=0.05, fail_first=2, api_key="k"
    ) as emu:
        s = openai_compat.settings_from_cfg(
            caption_cfg(
                **{
                    "openai.base_url": emu.url,
                    "openai.model": "qwen2.5-vl",
                    "openai.concurrency": 3,
                    "openai.backoff_s": 0.01,
                }
            ),
            env={"OPENAI_API_KEY": "k"},
        )
        totals = openai_compat.run_openai(inputs, tmp_path / "out", s, progress=False)
    assert emu.max_in_flight <= 3 and emu.max_in_flight >= 2
    assert len(emu.requests) == 14  # 12 records + 2 retried 503s
    req = emu.requests[-1]
    assert req["model"] == "qwen2.5-vl" and req["messages"][0]["role"] == "system"
    assert req["messages"][1]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert totals["successRecordCount"] == 12 and totals["inputTokenCount"] == 12 * 500
    out_lines = [json.loads(x) for x in (tmp_path / "out/part-00000.jsonl.out").read_text().splitlines()]
    assert [o["recordId"] for o in out_lines] == [r["id"] for r in rows]
    by_split, rejects = curate(
        inputs, [tmp_path / "out/part-00000.jsonl.out"], {r["id"]: r for r in rows}, tmp_path, CURATE, 0
    )
    assert sum(len(v) for v in by_split.values()) == 11
    assert [r["id"] for r in rejects] == [rows[-1]["id"]] and "no JSON object" in rejects[0]["reason"]


def test_unreachable_server_gives_record_errors_not_silence(tmp_path):
    rows = make_image_set(tmp_path, 2)
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", caption_cfg())
    s = openai_compat.OpenAISettings(
        base_url="http://127.0.0.1:9/v1", model="m", max_attempts=2, backoff_s=0.0, timeout_s=2
    )
    totals = openai_compat.run_openai(sorted((tmp_path / "jsonl").glob("*.jsonl")), tmp_path / "out", s, progress=False)
    assert totals["errorRecordCount"] == 2
    err = json.loads((tmp_path / "out/part-00000.jsonl.out").read_text().splitlines()[0])["error"]
    assert "gave up after 2 attempts" in err["errorMessage"]


def test_settings_errors_name_the_setting():
    with pytest.raises(CaptionError, match="caption.openai.base_url: not set"):
        openai_compat.settings_from_cfg(caption_cfg(**{"openai.model": "m"}), env={})
    with pytest.raises(CaptionError, match="caption.openai.model: not set"):
        openai_compat.settings_from_cfg(caption_cfg(**{"openai.base_url": "http://x/v1"}), env={})
    with pytest.raises(CaptionError, match="Nova requests"):
        openai_compat.chat_request({"recordId": "r", "modelInput": {"schemaVersion": "messages-v1"}}, "m")

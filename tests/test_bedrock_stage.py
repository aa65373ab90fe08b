"""The three stages end to end in a scratch repo (params.yaml as DVC composes it): offline,
and bedrock against the emulator (not AWS) + moto S3, including resume after an interruption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest_bedrock import aws_env, bucket, caption_cfg, emulator, make_image_set, moto_url, s3  # noqa: F401
from testkit import composed_params

REPO = Path(__file__).resolve().parents[1]


def _scratch(tmp_path: Path, monkeypatch, n=20, **caption_over) -> tuple[Path, list[dict]]:
    root = tmp_path / "repo"
    rows = make_image_set(root, n, unlabelled=1)
    (root / "dvc.yaml").write_text("stages: {}\n")
    paths = yaml.safe_load((REPO / "conf/paths/default.yaml").read_text())
    curate = yaml.safe_load((REPO / "conf/curate/default.yaml").read_text())
    curate["near_duplicate_max_distance"] = -1
    caption = caption_cfg(**{"quotas.min_records_per_job": 5, **caption_over}).as_dict()
    caption["pricing"] = str(REPO / "conf/pricing.yaml")
    (root / "params.yaml").write_text(
        yaml.safe_dump(composed_params({"seed": 42, "paths": paths, "caption": caption, "curate": curate}))
    )
    monkeypatch.setenv("CARSEARCH_ROOT", str(root))
    return root, rows


def _run_all(root):
    from carsearch.stages import caption_batch, curate_pairs, make_jsonl

    make_jsonl.main()
    caption_batch.main()
    curate_pairs.main()
    return json.loads((root / "metrics/caption.json").read_text()), json.loads(
        (root / "metrics/curate.json").read_text()
    )


def test_offline_stages_default_backend(tmp_path, monkeypatch):
    root, rows = _scratch(tmp_path, monkeypatch)
    cap, cur = _run_all(root)
    assert cap["backend"] == "offline" and cap["records"] == 20 and cap["succeeded"] == 19 and cap["failed"] == 1
    assert cap["estimated_usd"] > 0 and cap["input_tokens"] > 0
    assert sum(cur["pairs"].values()) + cur["rejected"] == 20
    failed = [json.loads(x) for x in (root / "data/captions/failed_records.jsonl").read_text().splitlines()]
    assert [f["recordId"] for f in failed] == [rows[-1]["id"]]
    assert json.loads((root / "data/jsonl/batch.json").read_text())["family"] == "claude"


def test_bedrock_stages_resume_after_interruption(tmp_path, monkeypatch, emulator, bucket, capsys):
    root, rows = _scratch(
        tmp_path,
        monkeypatch,
        **{"backend": "bedrock", "s3.bucket": bucket, "quotas.max_records_per_job": 10, "bedrock.wait_timeout_s": 0.0},
    )
    emu = emulator(labels={r["id"]: r["labels"] for r in rows}, delay=0.4)
    from carsearch.captioning.parse import CaptionError
    from carsearch.stages import caption_batch, curate_pairs, make_jsonl

    make_jsonl.main()
    with pytest.raises(CaptionError, match="still running after 0s .* re-run the stage to resume"):
        caption_batch.main()  # gives up waiting: like a killed run, the jobs keep going
    creates = sum(1 for m, p in emu.calls if m == "POST" and p == "/model-invocation-job")
    assert creates == 2
    state = list((root / ".carsearch/jobs").glob("*.json"))
    assert len(state) == 1
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["caption"]["bedrock"]["wait_timeout_s"] = None
    (root / "params.yaml").write_text(yaml.safe_dump(p))
    caption_batch.main()
    curate_pairs.main()
    assert sum(1 for m, p in emu.calls if m == "POST" and p == "/model-invocation-job") == 2
    cap = json.loads((root / "metrics/caption.json").read_text())
    assert cap["backend"] == "bedrock" and cap["records"] == 20 and cap["succeeded"] == 19 and cap["failed"] == 1
    assert cap["token_source"] == "manifest.json.out" and cap["input_tokens"] > 0 and cap["estimated_usd"] > 0
    out = capsys.readouterr().out
    assert f"failed record {rows[-1]['id']}" in out and "offline captioner: image has no labels" in out
    cur = json.loads((root / "metrics/curate.json").read_text())
    assert sum(cur["pairs"].values()) + cur["rejected"] == 20


def test_stage_errors_are_one_clear_line(tmp_path, monkeypatch, aws_env, capsys):
    from carsearch.core.params import run_stage
    from carsearch.stages import make_jsonl

    root, rows = _scratch(tmp_path, monkeypatch, model_id="meta.llama3-2-11b-instruct-v1:0")
    with pytest.raises(SystemExit):
        run_stage(make_jsonl.main)
    assert "caption.model_id: unknown model family for 'meta.llama3-2-11b-instruct-v1:0'" in capsys.readouterr().err
    root, rows = _scratch(tmp_path / "b", monkeypatch, model_id="amazon.nova-lite-v1:0")
    with pytest.raises(SystemExit):
        run_stage(make_jsonl.main)
    assert "caption.s3.bucket: not set" in capsys.readouterr().err

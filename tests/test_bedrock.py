"""caption.backend=bedrock with the real boto3 client over HTTP: S3 on a moto server, the Bedrock
control plane on carsearch_emulators.BedrockEmulator (an emulator of the documented API, not AWS)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from carsearch.captioning import bedrock, results
from carsearch.captioning import requests as batch
from carsearch.captioning.parse import CaptionError
from carsearch.curation.curate import curate, load_jobs
from conftest_bedrock import ROLE, aws_env, bucket, caption_cfg, clients, emulator, image_set, moto_url, s3  # noqa: F401
from testkit import section

CURATE = section(
    "curate",
    **{
        "splits": {"train": 0.7, "val": 0.1, "test": 0.2},
        "near_duplicate_max_distance": -1,
        "require_fields": ["body_type", "color", "view"],
    },
)


def _prepare(
    root: Path, rows: list[dict], bucket: str, model_id="anthropic.claude-3-haiku-20240307-v1:0", per_job=5, **over
):
    cfg = caption_cfg(
        **{
            "model_id": model_id,
            "s3.bucket": bucket,
            "quotas.min_records_per_job": 2,
            "quotas.max_records_per_job": per_job,
            **over,
        }
    )
    jsonl = root / "data" / "jsonl"
    index = batch.make_requests(rows, root, jsonl, cfg, bucket=bucket)
    settings = bedrock.settings_from_cfg(cfg)
    shards = bedrock.shard_jobs(jsonl, index, bucket, settings.prefix)
    state = (
        root
        / ".carsearch"
        / "jobs"
        / f"{bedrock.run_hash(settings.model_id, index['shards'], bucket, settings.prefix)}.json"
    )
    return cfg, settings, shards, state


def _labels(rows):
    return {r["id"]: r["labels"] for r in rows}


def _creates(emu):
    return sum(1 for m, p in emu.calls if m == "POST" and p == "/model-invocation-job")


def test_success_claude_shards_join_and_manifest(image_set, bucket, emulator, s3):
    root, rows = image_set
    emu = emulator(labels=_labels(rows))
    cfg, settings, shards, state = _prepare(root, rows, bucket)
    assert len(shards) == 3  # 12 records, <= 5 a job, evenly cut
    out = root / "data" / "captions"
    logs = []
    result = bedrock.run_bedrock(shards, out, settings, state, *clients(), log=logs.append)
    assert result["records"] == 12 and result["succeeded"] == 12 and result["failed"] == 0
    assert sorted(p.name for p in out.glob("*.jsonl.out")) == [f"part-0000{i}.jsonl.out" for i in range(3)]
    # output order is not input order; joined on recordId all the same
    first_out = [json.loads(x)["recordId"] for x in (out / "part-00000.jsonl.out").read_text().splitlines()]
    first_in = [json.loads(x)["recordId"] for x in (root / "data/jsonl/part-00000.jsonl").read_text().splitlines()]
    assert sorted(first_out) == sorted(first_in)
    totals = bedrock.manifest_totals(result["jobs"])
    assert totals["successRecordCount"] == 12 and totals["inputTokenCount"] > 0 and totals["outputTokenCount"] > 0
    assert all(j["status"] == "Completed" for j in result["jobs"])
    assert any("Validating" in x for x in logs) or any("Completed" in x for x in logs)
    # job name derived from the content hash; the job saw the uploaded file
    job = next(iter(emu.jobs.values()))
    assert job["jobName"].startswith("carsearch-part-0000") and job["clientRequestToken"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert any(k.endswith("/input/part-00000/part-00000.jsonl") for k in keys)
    assert any(k.endswith("/manifest.json.out") for k in keys)
    st = json.loads(state.read_text())
    assert set(st["jobs"]) == {"part-00000.jsonl", "part-00001.jsonl", "part-00002.jsonl"}
    by_split, rejects = curate(
        sorted((root / "data/jsonl").glob("*.jsonl")),
        sorted(out.glob("*.jsonl.out")),
        {r["id"]: r for r in rows},
        root,
        CURATE,
        0,
    )
    assert sum(len(v) for v in by_split.values()) == 12 and rejects == []


def test_partial_failure_every_record_accounted_for(image_set, bucket, emulator):
    root, rows = image_set
    ids = [r["id"] for r in rows]
    emulator(
        labels=_labels(rows),
        record_errors={ids[0]: (400, "Malformed input request: image too large")},
        drop_records={ids[1]},
        truncate_records={ids[2]},
        refuse={ids[3]},
        answers={ids[4]: "This looks like a red car to me.", ids[5]: '{"make": "Acme", "color": "red"}'},
    )
    cfg, settings, shards, state = _prepare(root, rows, bucket, per_job=12)
    out = root / "data" / "captions"
    result = bedrock.run_bedrock(shards, out, settings, state, *clients(), log=lambda s: None)
    assert [j["status"] for j in result["jobs"]] == ["PartiallyCompleted"]
    reasons = {r["recordId"]: r["reason"] for r in result["failed_records"]}
    assert "image too large" in reasons[ids[0]]
    assert "missing from part-00000.jsonl.out" in reasons[ids[1]]
    assert "truncated" in reasons[ids[2]] and ids[2] in reasons[ids[2]]
    failed_file = [json.loads(x) for x in (out / "failed_records.jsonl").read_text().splitlines()]
    assert {r["recordId"] for r in failed_file} == {ids[0], ids[1], ids[2]}
    by_split, rejects = curate(
        sorted((root / "data/jsonl").glob("*.jsonl")),
        sorted(out.glob("*.jsonl.out")),
        {r["id"]: r for r in rows},
        root,
        CURATE,
        0,
        jobs=load_jobs(out),
    )
    why = {r["id"]: r["reason"] for r in rejects}
    assert set(why) == set(ids[:6])
    assert why[ids[0]].startswith("model error 400")
    assert why[ids[1]].startswith("no output record")
    assert why[ids[2]].startswith("bad output line") and "truncated" in why[ids[2]]
    assert "refused" in why[ids[3]]
    assert "no JSON object" in why[ids[4]]
    assert "field 'model'" in why[ids[5]]
    assert sum(len(v) for v in by_split.values()) + len(rejects) == len(rows)


def test_failed_job_is_reported_then_only_it_is_resubmitted(image_set, bucket, emulator):
    root, rows = image_set
    emu = emulator(
        labels=_labels(rows), fail_jobs={"part-00001": "Unable to access the input S3 location: AccessDenied"}
    )
    cfg, settings, shards, state = _prepare(root, rows, bucket)
    out = root / "data" / "captions"
    with pytest.raises(
        CaptionError, match=r"part-00001.jsonl: job carsearch-part-00001-\w+ Failed: Unable to access the input"
    ):
        bedrock.run_bedrock(shards, out, settings, state, *clients(), log=lambda s: None)
    assert _creates(emu) == 3
    emu.fail_jobs.clear()
    result = bedrock.run_bedrock(shards, out, settings, state, *clients(), log=lambda s: None)
    assert _creates(emu) == 4  # only the failed shard, as attempt 2
    assert result["succeeded"] == 12
    names = sorted(j["jobName"] for j in result["jobs"])
    assert names[1].endswith("-r2")


def test_failed_job_allowed_incomplete_reports_missing_records(image_set, bucket, emulator):
    root, rows = image_set
    emulator(labels=_labels(rows), fail_jobs={"part-00000": "Internal failure"})
    cfg, settings, shards, state = _prepare(root, rows, bucket, **{"bedrock.allow_incomplete": True})
    out = root / "data" / "captions"
    result = bedrock.run_bedrock(shards, out, settings, state, *clients(), log=lambda s: None)
    assert result["failed"] == shards[0].records
    assert all("job carsearch-part-00000" in r["reason"] and "Failed" in r["reason"] for r in result["failed_records"])


class Killed(BaseException):
    pass


def test_interrupted_run_resumes_without_resubmitting(image_set, bucket, emulator):
    root, rows = image_set
    emu = emulator(labels=_labels(rows), delay=0.3)
    cfg, settings, shards, state = _prepare(root, rows, bucket)
    out = root / "data" / "captions"

    def killed(_):
        raise Killed()

    with pytest.raises(Killed):  # "kill" at the first wait between polls
        bedrock.run_bedrock(shards, out, settings, state, *clients(), sleep=killed, log=lambda s: None)
    saved = json.loads(state.read_text())["jobs"]
    assert len(saved) == 3 and all(e["jobArn"].startswith("arn:aws:bedrock:") for e in saved.values())
    assert _creates(emu) == 3
    logs = []
    result = bedrock.run_bedrock(shards, out, settings, state, *clients(), log=logs.append)
    assert _creates(emu) == 3  # nothing submitted (or paid for) again
    assert result["succeeded"] == 12
    assert sum("resuming job" in x for x in logs) == 3


def test_job_created_before_kill_but_not_saved_is_found_by_name(image_set, bucket, emulator, s3):
    root, rows = image_set
    emu = emulator(labels=_labels(rows))
    cfg, settings, shards, state = _prepare(root, rows, bucket, per_job=12)
    sh = shards[0]
    _, br = clients()
    bedrock.upload_shard(s3, sh)
    br.create_model_invocation_job(  # what the killed run had sent
        jobName=bedrock.job_name("carsearch", "part-00000", sh.sha256),
        roleArn=ROLE,
        modelId=settings.model_id,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": sh.input_uri}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": sh.output_uri}},
    )
    logs = []
    result = bedrock.run_bedrock(shards, root / "data/captions", settings, state, *clients(), log=logs.append)
    assert _creates(emu) == 1 and result["succeeded"] == 12
    assert any("before an interruption" in x for x in logs)


def test_throttling_is_retried_by_our_backoff_and_by_botocore(image_set, bucket, emulator):
    root, rows = image_set
    emu = emulator(labels=_labels(rows), throttle=4)
    cfg, settings, shards, state = _prepare(root, rows, bucket, per_job=12)
    logs, sleeps = [], []
    # botocore without retries: our own backoff handles the 429s
    result = bedrock.run_bedrock(
        shards,
        root / "data/captions",
        settings,
        state,
        *clients(max_attempts=1),
        log=logs.append,
        sleep=lambda s: sleeps.append(s),
    )
    assert emu.throttled == 4 and result["succeeded"] == 12
    assert sum("ThrottlingException" in x for x in logs) == 4
    # botocore's standard retry mode alone also gets through
    emu2 = emulator(labels=_labels(rows), throttle=2)
    _, br = clients(max_attempts=5)
    assert br.list_model_invocation_jobs()["invocationJobSummaries"] == [] and emu2.throttled == 2


def test_stop_and_list_jobs(image_set, bucket, emulator):
    root, rows = image_set
    emulator(labels=_labels(rows), delay=0.5)
    cfg, settings, shards, state = _prepare(root, rows, bucket, per_job=12)
    s3c, br = clients()
    bedrock.upload_shard(s3c, shards[0])
    arn = br.create_model_invocation_job(
        jobName="carsearch-stop-me",
        roleArn=ROLE,
        modelId=settings.model_id,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": shards[0].input_uri}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": shards[0].output_uri}},
    )["jobArn"]
    assert br.list_model_invocation_jobs(nameContains="stop-me")["invocationJobSummaries"][0]["jobArn"] == arn
    br.stop_model_invocation_job(jobIdentifier=arn)
    assert br.get_model_invocation_job(jobIdentifier=arn)["status"] in ("Stopping", "Stopped")
    import time

    for _ in range(50):
        if br.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopped":
            break
        time.sleep(0.05)
    assert br.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopped"
    with pytest.raises(br.exceptions.ResourceNotFoundException, match="Job abcdefabcdef not found"):
        br.get_model_invocation_job(jobIdentifier="abcdefabcdef")


def test_expired_job(image_set, bucket, emulator):
    root, rows = image_set
    emulator(labels=_labels(rows), expire_jobs={"part-00000"})
    cfg, settings, shards, state = _prepare(root, rows, bucket, per_job=12, **{"bedrock.allow_incomplete": True})
    result = bedrock.run_bedrock(shards, root / "data/captions", settings, state, *clients(), log=lambda s: None)
    assert result["jobs"][0]["status"] == "Expired"
    assert result["succeeded"] == 6 and result["failed"] == 6


def test_nova_images_on_s3(image_set, bucket, emulator, s3):
    root, rows = image_set
    emulator(labels=_labels(rows))
    cfg, settings, shards, state = _prepare(root, rows, bucket, model_id="us.amazon.nova-lite-v1:0", per_job=6)
    line = json.loads((root / "data/jsonl/part-00001.jsonl").read_text().splitlines()[0])
    uri = line["modelInput"]["messages"][0]["content"][0]["image"]["source"]["s3Location"]["uri"]
    assert uri.startswith(shards[1].input_uri + "images/")  # in the job's input folder, as Bedrock requires
    result = bedrock.run_bedrock(shards, root / "data/captions", settings, state, *clients(), log=lambda s: None)
    assert result["succeeded"] == 12
    out = json.loads((root / "data/captions/part-00000.jsonl.out").read_text().splitlines()[0])
    assert out["modelOutput"]["output"]["message"]["content"][0]["text"].startswith("{")
    assert bedrock.manifest_totals(result["jobs"])["inputTokenCount"] > 12 * 3  # images were read from S3


def test_nova_missing_image_is_a_record_error(image_set, bucket, emulator, s3):
    root, rows = image_set
    emulator(labels=_labels(rows))
    cfg, settings, shards, state = _prepare(root, rows, bucket, model_id="amazon.nova-lite-v1:0", per_job=12)
    victim = next(iter(shards[0].images))
    orig = bedrock.upload_shard

    def upload_without_one(s3c, sh, **kw):
        orig(s3c, sh, **kw)
        b, k = bedrock.split_s3(victim)
        s3c.delete_object(Bucket=b, Key=k)

    bedrock.upload_shard, saved = upload_without_one, bedrock.upload_shard
    try:
        result = bedrock.run_bedrock(shards, root / "data/captions", settings, state, *clients(), log=lambda s: None)
    finally:
        bedrock.upload_shard = saved
    assert result["failed"] == 1 and "Unable to access the image" in result["failed_records"][0]["reason"]


def test_missing_bucket_credentials_and_settings(image_set, bucket, emulator, monkeypatch):
    root, rows = image_set
    emulator(labels=_labels(rows))
    cfg, settings, shards, state = _prepare(root, rows, bucket)
    settings.bucket = "no-such-bucket-here"
    with pytest.raises(CaptionError, match="caption.s3.bucket: bucket 'no-such-bucket-here' does not exist"):
        bedrock.run_bedrock(shards, root / "c", settings, state, *clients(), log=lambda s: None)
    with pytest.raises(CaptionError, match="caption.s3.bucket: not set"):
        bedrock.settings_from_cfg(caption_cfg(**{"s3.bucket": None}), env={})
    assert bedrock.settings_from_cfg(caption_cfg(**{"s3.bucket": None}), env={"CARSEARCH_BUCKET": "b"}).bucket == "b"
    with pytest.raises(CaptionError, match="caption.bedrock.role_arn: not set"):
        bedrock.settings_from_cfg(caption_cfg(**{"s3.bucket": "b", "bedrock.role_arn": None}), env={})
    with pytest.raises(CaptionError, match="is not an IAM role ARN"):  # the schema checks the configured one
        env = {"CARSEARCH_BEDROCK_ROLE_ARN": "my-role"}
        bedrock.settings_from_cfg(caption_cfg(**{"s3.bucket": "b", "bedrock.role_arn": None}), env=env)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CaptionError, match="no AWS credentials found by the boto3 chain"):
        bedrock.make_clients(settings)


def test_below_min_records_per_job_is_refused_before_submitting(image_set, bucket, emulator):
    root, rows = image_set
    emu = emulator(labels=_labels(rows))
    cfg, settings, shards, state = _prepare(root, rows, bucket)
    settings.min_records_per_job = 100
    with pytest.raises(CaptionError, match=r"min_records_per_job=100: .*part-00000.jsonl \(4\)"):
        bedrock.run_bedrock(shards, root / "c", settings, state, *clients(), log=lambda s: None)
    assert _creates(emu) == 0


def test_cost_estimate_from_price_table():
    prices = results.load_prices(Path(__file__).resolve().parents[1] / "conf" / "pricing.yaml")
    usd = results.estimate_cost(prices, "us.anthropic.claude-3-haiku-20240307-v1:0", 1_000_000, 100_000)
    assert usd == pytest.approx(1000 * 0.000125 + 100 * 0.000625)
    assert results.estimate_cost(prices, "amazon.nova-lite-v1:0", 1000, 1000) == pytest.approx(0.00015)
    assert results.estimate_cost(prices, "meta.llama3", 1000, 1000) is None

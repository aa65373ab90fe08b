"""Bedrock batch inference on real S3: upload request shards (and Nova images), submit one
model-invocation job per shard, poll with backoff, download `.jsonl.out` + `manifest.json.out`,
and reconcile the outputs with the inputs by recordId.

Resumable: the job ARN of every shard is written to a small JSON state file (outside the DVC
output folder) the moment the job is created, so a re-run after an interruption polls the jobs it
already submitted instead of paying for them again. A job created just before a kill (ARN never
saved) is found again by its name, which is derived from the shard's content hash; the same hash
is the idempotency token (`clientRequestToken`).

The run itself (settings, clients, submit, poll, download, reconcile) is here; its plumbing (job
state, names, S3 helpers, retried calls, shards) is `captioning.bedrock_jobs` and its caption-cache
plan `captioning.bedrock_cache`, both re-exported here.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from carsearch.captioning.bedrock_cache import CachePlan, merge_replayed, plan_with_cache, store_answers
from carsearch.captioning.bedrock_jobs import (
    RETRYABLE_CODES,
    RUNNING,
    TERMINAL,
    JobStore,
    ShardJob,
    call,
    check_bucket,
    find_job,
    job_name,
    manifest_totals,
    run_hash,
    shard_jobs,
    split_s3,
    upload_shard,
)
from carsearch.captioning.parse import CaptionError
from carsearch.captioning.results import OK_STATES, reconcile
from carsearch.core.io import write_bytes, write_json
from carsearch.core.schema import Caption


@dataclass
class Settings:
    model_id: str
    role_arn: str
    bucket: str
    prefix: str = "carsearch"
    region: str | None = None
    poll_initial_s: float = 30.0
    poll_max_s: float = 600.0
    poll_factor: float = 1.5
    wait_timeout_s: float | None = None  # give up waiting (jobs keep running; re-run resumes)
    job_timeout_hours: int = 24  # Bedrock's timeoutDurationInHours (24..168)
    api_max_attempts: int = 8  # botocore standard retries, then ours
    api_backoff_s: float = 1.0
    resubmit_failed: bool = True  # a re-run resubmits shards whose job Failed/Stopped/Expired
    allow_incomplete: bool = False  # accept Failed/Stopped/Expired jobs (records reported missing)
    min_records_per_job: int = 100
    job_name_prefix: str = "carsearch"


def settings_from_cfg(cfg: Caption, env: dict | None = None) -> Settings:
    """Bedrock settings from `params.yaml:caption`, with `$CARSEARCH_BUCKET`,
    `$CARSEARCH_BEDROCK_ROLE_ARN` and `$AWS_REGION` filling settings left empty."""
    env = os.environ if env is None else env
    b, s3cfg = cfg.bedrock, cfg.s3
    bucket = s3cfg.bucket or env.get("CARSEARCH_BUCKET")
    if not bucket:
        raise CaptionError(
            "caption.s3.bucket: not set (set it in conf/caption/*.yaml, `-S caption.s3.bucket=NAME`, or $CARSEARCH_BUCKET)"
        )
    role = b.role_arn or env.get("CARSEARCH_BEDROCK_ROLE_ARN")
    if not role:
        raise CaptionError(
            "caption.bedrock.role_arn: not set: the IAM service role Bedrock assumes to read/write "
            "the bucket (or $CARSEARCH_BEDROCK_ROLE_ARN); see docs/bedrock.md"
        )
    if not str(role).startswith("arn:aws") or ":role/" not in str(role):
        raise CaptionError(
            f"caption.bedrock.role_arn: {role!r} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
        )
    region = b.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    keys = {f for f in Settings.__dataclass_fields__}
    extra = {k: v for k, v in b.as_dict().items() if k in keys and v is not None and k not in ("role_arn", "region")}
    return Settings(
        model_id=cfg.model_id,
        role_arn=role,
        bucket=bucket,
        prefix=str(s3cfg.prefix),
        region=region,
        min_records_per_job=int(cfg.quotas.min_records_per_job),
        **extra,
    )


def make_clients(settings: Settings):
    """(s3, bedrock) boto3 clients by the standard credential chain; endpoints follow
    `$AWS_ENDPOINT_URL_S3` / `$AWS_ENDPOINT_URL_BEDROCK` (or `$AWS_ENDPOINT_URL`) when set."""
    import boto3
    from botocore.config import Config

    session = boto3.Session(region_name=settings.region) if settings.region else boto3.Session()
    if session.region_name is None:
        raise CaptionError(
            "caption.bedrock.region: not set and no $AWS_REGION / profile region; Bedrock is regional (e.g. us-east-1)"
        )
    if session.get_credentials() is None:
        raise CaptionError(
            "no AWS credentials found by the boto3 chain ($AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY, "
            "$AWS_PROFILE / ~/.aws, SSO, or an instance/container role); see docs/bedrock.md"
        )
    conf = Config(
        retries={"mode": "standard", "total_max_attempts": settings.api_max_attempts},
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client("s3", config=conf), session.client("bedrock", config=conf)


def run_bedrock(
    shards: list[ShardJob],
    out_dir: Path,
    settings: Settings,
    state_path: Path,
    s3,
    bedrock,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = print,
) -> dict:
    """Submit (or resume) one job per shard, wait for all, download and reconcile the outputs.
    Returns the reconciliation summary (see `reconcile`) plus `jobs`."""
    kw = {"attempts": settings.api_max_attempts, "backoff_s": settings.api_backoff_s, "sleep": sleep, "log": log}
    check_bucket(s3, settings.bucket)
    small = [f"{s.file} ({s.records})" for s in shards if s.records < settings.min_records_per_job]
    if small:
        raise CaptionError(
            f"caption.quotas.min_records_per_job={settings.min_records_per_job}: Bedrock rejects jobs with fewer "
            f"records: {', '.join(small)} (add images, lower the quota if your account's is lower, or set "
            "caption.cache.pad_small_jobs=true to top a job up with already-cached records)"
        )
    store = JobStore(state_path)
    store.data["run"] = state_path.stem
    for sh in shards:  # 1. submit what has no job yet (or whose job failed and may be resubmitted)
        _submit(sh, settings, store, s3, bedrock, kw, log)
    _wait(shards, settings, store, state_path, bedrock, kw, sleep, log)  # 2. poll until every job is terminal
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = [_download(sh, store, out_dir, s3, kw, log) for sh in shards]  # 3. download outputs
    # 4. reconcile by recordId; every input record is accounted for
    result = reconcile([sh.path for sh in shards], out_dir, {j["file"]: j for j in jobs})
    result["jobs"] = jobs
    write_json(out_dir / "jobs.json", jobs)
    bad = [j for j in jobs if j["status"] not in OK_STATES]
    for sh in shards:  # a failed job is reported once; the next run may resubmit it
        e = store.get(sh.file)
        e["reported"] = True
        store.put(sh.file, e)
    if bad and not settings.allow_incomplete:
        lines = "; ".join(
            f"{j['file']}: job {j['jobName']} {j['status']}" + (f": {j['message']}" if j.get("message") else "")
            for j in bad
        )
        raise CaptionError(
            f"{len(bad)} Bedrock job(s) did not complete ({lines}); completed jobs are kept: re-run to resubmit "
            f"{'only these' if settings.resubmit_failed else 'nothing (caption.bedrock.resubmit_failed=false)'}, "
            "or set caption.bedrock.allow_incomplete=true to continue without their records"
        )
    return result


def _submit(sh: ShardJob, settings: Settings, store: JobStore, s3, bedrock, kw: dict, log) -> None:
    """One shard's job: resumed from the state file, found again by name, or uploaded and created
    (its ARN persisted before anything else can fail)."""
    entry = store.get(sh.file)
    if entry and entry.get("sha256") != sh.sha256:
        entry = None
    if (
        entry
        and entry.get("status") in ("Failed", "Stopped", "Expired")
        and settings.resubmit_failed
        and entry.get("reported")
    ):
        log(f"{sh.file}: job {entry['jobName']} ended {entry['status']}; resubmitting")
        entry = {"sha256": sh.sha256, "attempt": entry.get("attempt", 1) + 1}
    entry = entry or {"sha256": sh.sha256, "attempt": 1}
    if entry.get("jobArn"):
        log(f"{sh.file}: resuming job {entry['jobName']} ({entry.get('status', '?')}), not resubmitting")
        return
    name = job_name(settings.job_name_prefix, Path(sh.file).stem, sh.sha256, entry["attempt"])
    found = find_job(bedrock, name, **kw)
    if found:
        log(f"{sh.file}: found job {name} submitted before an interruption; resuming it")
        entry.update(jobArn=found["jobArn"], jobName=name, status=found["status"], outputUri=sh.output_uri)
        store.put(sh.file, entry)
        return
    upload_shard(s3, sh, **kw)
    resp = call(
        bedrock.create_model_invocation_job,
        **kw,
        jobName=name,
        roleArn=settings.role_arn,
        modelId=settings.model_id,
        clientRequestToken=f"{sh.sha256[:40]}-{entry['attempt']}",
        inputDataConfig={"s3InputDataConfig": {"s3InputFormat": "JSONL", "s3Uri": sh.input_uri}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": sh.output_uri}},
        timeoutDurationInHours=settings.job_timeout_hours,
    )
    entry.update(
        jobArn=resp["jobArn"], jobName=name, status="Submitted", outputUri=sh.output_uri, submitted=time.time()
    )
    store.put(sh.file, entry)  # persisted before anything else can fail
    log(f"{sh.file}: submitted {name} -> {resp['jobArn']}")


def _wait(shards, settings: Settings, store: JobStore, state_path: Path, bedrock, kw: dict, sleep, log) -> None:
    """Poll with backoff until every job is terminal (or `wait_timeout_s`: the jobs keep running)."""
    delay, waited = settings.poll_initial_s, 0.0
    while True:
        pending = 0
        for sh in shards:
            entry = store.get(sh.file)
            if entry["status"] in TERMINAL:
                continue
            job = call(bedrock.get_model_invocation_job, jobIdentifier=entry["jobArn"], **kw)
            if job["status"] != entry["status"]:
                log(
                    f"{sh.file}: {entry['jobName']} {entry['status']} -> {job['status']}"
                    + (f" ({job['message']})" if job.get("message") else "")
                )
                entry.update(status=job["status"], message=job.get("message"))
                store.put(sh.file, entry)
            pending += job["status"] not in TERMINAL
        if not pending:
            return
        if settings.wait_timeout_s is not None and waited >= settings.wait_timeout_s:
            raise CaptionError(
                f"{pending} Bedrock job(s) still running after {waited:.0f}s (caption.bedrock.wait_timeout_s); "
                f"they keep running: re-run the stage to resume (job ids in {state_path})"
            )
        sleep(delay)
        waited += delay
        delay = min(delay * settings.poll_factor, settings.poll_max_s)


def _download(sh: ShardJob, store: JobStore, out_dir: Path, s3, kw: dict, log) -> dict:
    """A finished job's `.jsonl.out` files and its `manifest.json.out` into `out_dir`; its jobs.json entry."""
    entry = store.get(sh.file)
    job_id = entry["jobArn"].rsplit("/", 1)[-1]
    bucket, key = split_s3(entry["outputUri"])
    base = "/".join(p for p in (key.strip("/"), job_id) if p) + "/"
    listing = call(s3.list_objects_v2, Bucket=bucket, Prefix=base, **kw).get("Contents", [])
    got = {}
    for obj in listing:
        name = obj["Key"][len(base) :]
        if name.endswith(".jsonl.out"):
            data = call(s3.get_object, Bucket=bucket, Key=obj["Key"], **kw)["Body"].read()
            write_bytes(out_dir / name, data)
            got[name] = len(data)
        elif name == "manifest.json.out":
            data = call(s3.get_object, Bucket=bucket, Key=obj["Key"], **kw)["Body"].read()
            write_bytes(out_dir / "manifests" / f"{Path(sh.file).stem}.manifest.json.out", data)
            try:
                entry["manifest"] = json.loads(data)
            except json.JSONDecodeError:
                entry["manifest"] = None
                log(f"{sh.file}: manifest.json.out of {entry['jobName']} is not valid JSON; token counts unknown")
    entry["outputs"] = got
    return {
        "file": sh.file,
        **{k: entry.get(k) for k in ("jobName", "jobArn", "status", "message", "attempt", "manifest")},
    }


__all__ = [
    "RETRYABLE_CODES",
    "RUNNING",
    "TERMINAL",
    "Settings",
    "settings_from_cfg",
    "make_clients",
    "run_bedrock",
    "JobStore",
    "ShardJob",
    "call",
    "check_bucket",
    "find_job",
    "job_name",
    "split_s3",
    "upload_shard",
    "shard_jobs",
    "run_hash",
    "manifest_totals",
    "CachePlan",
    "plan_with_cache",
    "store_answers",
    "merge_replayed",
]

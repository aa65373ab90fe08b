"""Bedrock batch inference on real S3: upload request shards (and Nova images), submit one
model-invocation job per shard, poll with backoff, download `.jsonl.out` + `manifest.json.out`,
and reconcile the outputs with the inputs by recordId.

Resumable: the job ARN of every shard is written to a small JSON state file (outside the DVC
output folder) the moment the job is created, so a re-run after an interruption polls the jobs it
already submitted instead of paying for them again. A job created just before a kill (ARN never
saved) is found again by its name, which is derived from the shard's content hash; the same hash
is the idempotency token (`clientRequestToken`).

Over 350 lines on purpose: one Bedrock batch run end to end (settings, clients, resumable job
state, upload, submit, poll, resubmit, and its caption-cache plan) reads best in one place.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from carsearch.captioning import formats
from carsearch.captioning.cache import split_records
from carsearch.captioning.parse import CaptionError
from carsearch.captioning.requests import IMAGES_SUBDIR, image_uris, s3_layout
from carsearch.captioning.results import OK_STATES, reconcile
from carsearch.core.io import write_bytes, write_json
from carsearch.core.schema import Caption

# Documented job states (ModelInvocationJobStatus).
RUNNING = ("Submitted", "Validating", "Scheduled", "InProgress", "Stopping")
TERMINAL = ("Completed", "PartiallyCompleted", "Failed", "Stopped", "Expired")
RETRYABLE_CODES = {
    "ThrottlingException",
    "TooManyRequestsException",
    "ServiceUnavailableException",
    "InternalServerException",
    "RequestTimeout",
    "SlowDown",
}


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


# ------------------------------------------------------------------ job state (resume)
class JobStore:
    """The per-run job state file: `{"run": hash, "jobs": {shard file: {...}}}`, written atomically."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {"jobs": {}}

    def get(self, shard: str) -> dict | None:
        return self.data["jobs"].get(shard)

    def put(self, shard: str, entry: dict) -> None:
        self.data["jobs"][shard] = entry
        self.save()

    def save(self) -> None:
        write_json(self.path, self.data)


def run_hash(model_id: str, shards: list[dict], bucket: str, prefix: str) -> str:
    import hashlib

    blob = json.dumps({"m": model_id, "b": bucket, "p": prefix, "s": sorted((s["file"], s["sha256"]) for s in shards)})
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def job_name(prefix: str, stem: str, sha: str, attempt: int = 1) -> str:
    name = f"{prefix}-{stem}-{sha[:16]}" + (f"-r{attempt}" if attempt > 1 else "")
    return name[:63]


# ------------------------------------------------------------------ S3 helpers
def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def _code(e: Exception) -> str:
    return getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(e, "response") else ""


def call(fn: Callable, *args, attempts: int = 6, backoff_s: float = 1.0, sleep: Callable = time.sleep, log=None, **kw):
    """Call a boto3 operation; throttling/5xx that outlast botocore's own retries are retried here
    with exponential backoff (jittered), other errors raise."""
    import random

    from botocore.exceptions import ClientError
    from botocore.exceptions import ConnectionError as BotoConnError

    for i in range(attempts):
        try:
            return fn(*args, **kw)
        except (ClientError, BotoConnError) as e:
            code = _code(e) or type(e).__name__
            if i == attempts - 1 or not (code in RETRYABLE_CODES or isinstance(e, BotoConnError)):
                raise
            wait = backoff_s * (2**i) * (0.5 + random.random() / 2)
            if log:
                log(f"  {getattr(fn, '__name__', 'call')}: {code}, retrying in {wait:.1f}s")
            sleep(wait)


def check_bucket(s3, bucket: str) -> None:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as e:
        code = _code(e)
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise CaptionError(
                f"caption.s3.bucket: bucket {bucket!r} does not exist (create it in the job's region)"
            ) from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise CaptionError(f"caption.s3.bucket: access to bucket {bucket!r} denied for these credentials") from None
        raise CaptionError(f"caption.s3.bucket: cannot reach bucket {bucket!r}: {code or e}") from None


# ------------------------------------------------------------------ the run
@dataclass
class ShardJob:
    file: str  # local request file name (part-00000.jsonl)
    path: Path
    sha256: str
    records: int
    input_uri: str  # S3 folder with the jsonl (+ images)
    output_uri: str  # S3 folder Bedrock writes <jobId>/... under
    images: dict = field(default_factory=dict)  # S3 URI -> local file (Nova)


def upload_shard(s3, shard: ShardJob, **kw) -> None:
    bucket, key = split_s3(shard.input_uri)
    for uri, local in shard.images.items():
        b, k = split_s3(uri)
        call(s3.put_object, Bucket=b, Key=k, Body=Path(local).read_bytes(), **kw)
    call(s3.put_object, Bucket=bucket, Key=f"{key.rstrip('/')}/{shard.file}", Body=shard.path.read_bytes(), **kw)


def find_job(bedrock, name: str, **kw) -> dict | None:
    """A job with exactly this name (submitted before an interruption), newest first."""
    token = None
    while True:
        args = {"nameContains": name, "sortOrder": "Descending", "maxResults": 100}
        if token:
            args["nextToken"] = token
        page = call(bedrock.list_model_invocation_jobs, **args, **kw)
        for j in page.get("invocationJobSummaries", []):
            if j["jobName"] == name:
                return j
        token = page.get("nextToken")
        if not token:
            return None


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
    # 1. submit what has no job yet (or whose job failed and may be resubmitted)
    for sh in shards:
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
            continue
        name = job_name(settings.job_name_prefix, Path(sh.file).stem, sh.sha256, entry["attempt"])
        found = find_job(bedrock, name, **kw)
        if found:
            log(f"{sh.file}: found job {name} submitted before an interruption; resuming it")
            entry.update(jobArn=found["jobArn"], jobName=name, status=found["status"], outputUri=sh.output_uri)
            store.put(sh.file, entry)
            continue
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
    # 2. poll with backoff until every job is terminal
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
            break
        if settings.wait_timeout_s is not None and waited >= settings.wait_timeout_s:
            raise CaptionError(
                f"{pending} Bedrock job(s) still running after {waited:.0f}s (caption.bedrock.wait_timeout_s); "
                f"they keep running: re-run the stage to resume (job ids in {state_path})"
            )
        sleep(delay)
        waited += delay
        delay = min(delay * settings.poll_factor, settings.poll_max_s)
    # 3. download outputs
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for sh in shards:
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
        jobs.append(
            {
                "file": sh.file,
                **{k: entry.get(k) for k in ("jobName", "jobArn", "status", "message", "attempt", "manifest")},
            }
        )
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


def manifest_totals(jobs: list[dict]) -> dict:
    """Sum the per-job `manifest.json.out` counts (token counts as Bedrock reports them)."""
    keys = (
        "totalRecordCount",
        "processedRecordCount",
        "successRecordCount",
        "errorRecordCount",
        "inputTokenCount",
        "outputTokenCount",
    )
    tot = dict.fromkeys(keys, 0)
    for j in jobs:
        for k in keys:
            tot[k] += int((j.get("manifest") or {}).get(k, 0) or 0)
    return tot


def shard_jobs(jsonl_dir: Path, index: dict, bucket: str, prefix: str) -> list[ShardJob]:
    """ShardJobs from make_jsonl's `batch.json` (re-laid out if the bucket/prefix changed since)."""
    if index.get("family") == "nova" and (index.get("bucket") != bucket or index.get("prefix") != prefix):
        raise CaptionError(
            f"caption.s3: the Nova request files name images in s3://{index.get('bucket')}/{index.get('prefix')}, "
            f"not s3://{bucket}/{prefix}; re-run make_jsonl (dvc repro) after changing the bucket"
        )
    out = []
    for s in index["shards"]:
        path = jsonl_dir / s["file"]
        lay = s3_layout(bucket, prefix, index["batch_key"], Path(s["file"]).stem)
        images = {}
        if index.get("family") == "nova":
            for uri in image_uris(path):
                local = jsonl_dir / IMAGES_SUBDIR / uri.rsplit("/", 1)[-1]
                if not local.is_file():
                    raise CaptionError(f"{s['file']}: image {local} for {uri} is missing; re-run make_jsonl")
                images[uri] = local
        out.append(ShardJob(s["file"], path, s["sha256"], s["records"], lay["input"], lay["output"], images))
    return out


# ------------------------------------------------------------------ caption cache
@dataclass
class CachePlan:
    send: list[ShardJob]  # shards to submit (only uncached records)
    replay: dict[str, list[dict]]  # shard file -> output lines replayed from the cache
    keys: dict[str, str]  # recordId -> cache key, for the records sent
    padded: int = 0  # cached records sent again to reach min_records_per_job


def plan_with_cache(
    shards: list[ShardJob], cache, work_dir: Path, min_records: int = 0, pad: bool = False
) -> CachePlan:
    """Split every shard into cached records (replayed) and the rest, and rewrite each shard to hold
    only the rest (`work_dir/<shard file>`; an all-new shard is sent unchanged, an all-cached one
    not at all). A Nova shard keeps only the images its remaining records reference. With `pad`,
    a rewritten shard under `min_records` is topped up with cached records (sent and paid for again,
    their cached answers kept) so Bedrock accepts the job."""
    plan = CachePlan([], {}, {})
    for sh in shards:
        raw = [line for line in sh.path.read_text(encoding="utf-8").splitlines(keepends=True) if line.strip()]
        recs = [json.loads(line) for line in raw]
        cached, todo = split_records(recs, cache)
        if cached:
            plan.replay[sh.file] = [cached[r["recordId"]] for r in recs if r["recordId"] in cached]
        if not todo:
            continue
        plan.keys.update((r["recordId"], k) for r, k in todo)
        if not cached:
            plan.send.append(sh)
            continue
        keep = {r["recordId"] for r, _ in todo}
        if pad and len(keep) < min_records:
            extra = [r["recordId"] for r in recs if r["recordId"] not in keep][: min_records - len(keep)]
            keep.update(extra)
            plan.padded += len(extra)
        lines = [line if line.endswith("\n") else line + "\n" for line, r in zip(raw, recs) if r["recordId"] in keep]
        data = "".join(lines).encode("utf-8")
        path = Path(work_dir) / sh.file
        write_bytes(path, data)
        uris = set()
        for r in recs:
            if r["recordId"] in keep:
                for msg in r["modelInput"].get("messages", []):
                    for block in msg.get("content", []):
                        loc = (
                            (block.get("image") or {}).get("source", {}).get("s3Location")
                            if isinstance(block, dict)
                            else None
                        )
                        if loc:
                            uris.add(loc["uri"])
        plan.send.append(
            ShardJob(
                sh.file,
                path,
                hashlib.sha256(data).hexdigest(),
                len(lines),
                sh.input_uri,
                sh.output_uri,
                {u: f for u, f in sh.images.items() if u in uris},
            )
        )
    return plan


def store_answers(plan: CachePlan, out_dir: Path, cache) -> int:
    """Put the successful answers of the downloaded `.jsonl.out` files of the sent shards into the cache."""
    n = 0
    for sh in plan.send:
        p = out_dir / f"{sh.file}.out"
        if not p.is_file():
            continue
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            key = plan.keys.get(rec.get("recordId")) if isinstance(rec, dict) else None
            if key and cache.add(key, rec):
                n += 1
    return n


def merge_replayed(plan: CachePlan, out_dir: Path) -> None:
    """Add the cached answers to each shard's `.jsonl.out` (written when no job ran for the shard),
    so the outputs hold every record; a padded record keeps its cached answer."""
    for file, outs in plan.replay.items():
        p = out_dir / f"{file}.out"
        mine = {o["recordId"] for o in outs}
        kept = []
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                try:
                    if json.loads(line).get("recordId") in mine:
                        continue
                except (json.JSONDecodeError, AttributeError):
                    pass
                kept.append(line + "\n")
        write_bytes(p, ("".join(kept) + "".join(formats.dumps(o) + "\n" for o in outs)).encode("utf-8"))


__all__ = [
    "Settings",
    "settings_from_cfg",
    "make_clients",
    "run_bedrock",
    "JobStore",
    "ShardJob",
    "shard_jobs",
    "run_hash",
    "manifest_totals",
    "CachePlan",
    "plan_with_cache",
    "store_answers",
    "merge_replayed",
]

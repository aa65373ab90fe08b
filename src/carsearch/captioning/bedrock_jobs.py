"""Bedrock batch plumbing under `captioning.bedrock`'s run: the resumable job state file, job
names, S3 helpers, boto3 calls retried with backoff, one shard's upload and lookup, and the shard
list from make_jsonl's `batch.json`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from carsearch.captioning.parse import CaptionError
from carsearch.captioning.requests import IMAGES_SUBDIR, image_uris, s3_layout
from carsearch.core.io import write_json

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


# ------------------------------------------------------------------ shards
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

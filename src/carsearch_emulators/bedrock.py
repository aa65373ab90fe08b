"""An EMULATOR of the Amazon Bedrock batch-inference control plane (not AWS).

It serves the documented REST-JSON paths of the `bedrock` service model
(botocore/data/bedrock/2023-04-20/service-2.json) on 127.0.0.1, so the real boto3 client talks
to it over HTTP with `endpoint_url=` (or `$AWS_ENDPOINT_URL_BEDROCK`):

    POST /model-invocation-job                        CreateModelInvocationJob
    GET  /model-invocation-job/{jobIdentifier}        GetModelInvocationJob
    GET  /model-invocation-jobs                       ListModelInvocationJobs
    POST /model-invocation-job/{jobIdentifier}/stop   StopModelInvocationJob

A job reads every `*.jsonl` under its input S3 URI, walks Submitted -> Validating -> Scheduled ->
InProgress (`delay` seconds each), answers each record with `carsearch.captioning.offline.offline_output`
from the labels it was given (a vehicles request: every box of the frame it was given, as JSON), and writes `<output S3 URI>/<jobId>/<input file>.out` plus
`manifest.json.out` as Bedrock does, then ends Completed (or PartiallyCompleted when records
failed). Knobs for tests: failing jobs, record errors, refusals / free-text answers, records left
out of the output, truncated lines, expiry, throttling (429 ThrottlingException).

One record's answer (the knobs that refuse, fail or replace it; a Nova image read from S3) is
`carsearch_emulators.bedrock_answers`.
"""

from __future__ import annotations

import json
import random
import re
import threading
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from carsearch.captioning import formats
from carsearch.captioning.formats import count_output
from carsearch_emulators.bedrock_answers import answer_record, split_s3

_NAME = re.compile(r"^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}$")
_ROLE = re.compile(r"^arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+$")
TERMINAL = {"Completed", "Failed", "Stopped", "PartiallyCompleted", "Expired"}


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class BedrockEmulator:
    """Run with `with BedrockEmulator(s3_endpoint_url=..., labels=...) as emu: emu.url`."""

    s3_endpoint_url: str
    labels: dict = field(default_factory=dict)  # recordId -> labels for the offline captioner
    frames: dict = field(default_factory=dict)  # recordId -> manifest row (width, height, boxes): vehicles requests
    delay: float = 0.02  # seconds in each non-terminal status
    fail_jobs: dict = field(default_factory=dict)  # job-name substring -> failure message
    expire_jobs: set = field(default_factory=set)  # job-name substrings that end Expired (half done)
    record_errors: dict = field(default_factory=dict)  # recordId -> (errorCode, errorMessage)
    answers: dict = field(default_factory=dict)  # recordId -> raw answer text (refusals, non-JSON)
    refuse: set = field(default_factory=set)  # recordIds answered with stop_reason "refusal"
    drop_records: set = field(default_factory=set)  # recordIds left out of the output
    truncate_records: set = field(default_factory=set)  # recordIds whose output line is cut short
    throttle: int = 0  # the first N API calls get 429 ThrottlingException
    partial_on_record_errors: bool = True  # any record error -> PartiallyCompleted
    shuffle_output: bool = True  # Bedrock does not keep input order
    region: str = "us-east-1"
    account: str = "123456789012"
    credentials: tuple = ("testing", "testing")

    def __post_init__(self):
        self.jobs: dict[str, dict] = {}
        self.calls: list[tuple[str, str]] = []
        self.received: dict[str, list[str]] = {}  # job name -> recordIds of the input lines it read
        self.throttled = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "BedrockEmulator":
        emu = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def _dispatch(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    status, body = emu._handle(method, self.path, raw)
                    payload = json.dumps(body).encode()
                    self.send_response(status)
                except _ApiError as e:
                    payload = json.dumps({"message": e.message}).encode()
                    self.send_response(e.status)
                    self.send_header("x-amzn-ErrorType", e.code)
                self.send_header("Content-Type", "application/json")
                self.send_header("x-amzn-RequestId", f"emu-{random.getrandbits(48):012x}")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        t = threading.Thread(target=self._server.serve_forever, name="bedrock-emulator", daemon=True)
        t.start()
        return self

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._stopping.set()
        if self._server:
            self._server.shutdown()
            self._server.server_close()
        for t in self._threads:
            t.join(timeout=5)

    def __enter__(self) -> "BedrockEmulator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _s3(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.credentials[0],
            aws_secret_access_key=self.credentials[1],
        )

    # ------------------------------------------------------------------ HTTP API
    def _handle(self, method: str, raw_path: str, raw: bytes) -> tuple[int, dict]:
        parsed = urllib.parse.urlsplit(raw_path)
        path, query = parsed.path, urllib.parse.parse_qs(parsed.query)
        with self._lock:
            self.calls.append((method, path))
            if self.throttled < self.throttle:
                self.throttled += 1
                raise _ApiError(429, "ThrottlingException", "Too many requests, please wait before trying again.")
        body = json.loads(raw) if raw else {}
        if method == "POST" and path == "/model-invocation-job":
            return 200, self._create(body)
        if method == "GET" and path == "/model-invocation-jobs":
            return 200, self._list(query)
        m = re.fullmatch(r"/model-invocation-job/([^/]+)(/stop)?", path)
        if m:
            job = self._find(urllib.parse.unquote(m.group(1)))
            if m.group(2) and method == "POST":
                return 200, self._stop(job)
            if method == "GET" and not m.group(2):
                return 200, self._describe(job)
        raise _ApiError(404, "UnknownOperationException", f"emulator: no operation for {method} {path}")

    def _create(self, body: dict) -> dict:
        for key in ("jobName", "roleArn", "modelId", "inputDataConfig", "outputDataConfig"):
            if key not in body:
                raise _ApiError(400, "ValidationException", f"1 validation error detected: '{key}' must not be null")
        name = body["jobName"]
        if not _NAME.match(name) or len(name) > 63:
            raise _ApiError(400, "ValidationException", f"jobName {name!r} does not match the pattern")
        if not _ROLE.match(body["roleArn"]):
            raise _ApiError(400, "ValidationException", f"roleArn {body['roleArn']!r} is not an IAM role ARN")
        try:
            formats.model_family(body["modelId"])
        except formats.FormatError:
            raise _ApiError(
                400, "ValidationException", f"The provided model identifier is invalid: {body['modelId']}"
            ) from None
        in_uri = body["inputDataConfig"].get("s3InputDataConfig", {}).get("s3Uri", "")
        out_uri = body["outputDataConfig"].get("s3OutputDataConfig", {}).get("s3Uri", "")
        for uri in (in_uri, out_uri):
            bucket, _ = split_s3(uri)
            try:
                self._s3().head_bucket(Bucket=bucket)
            except Exception:
                raise _ApiError(
                    400, "ValidationException", f"S3 bucket {bucket!r} does not exist or is not accessible"
                ) from None
        with self._lock:
            token = body.get("clientRequestToken")
            for job in self.jobs.values():
                if token and job.get("clientRequestToken") == token:
                    return {"jobArn": job["jobArn"]}  # idempotent retry
                if job["jobName"] == name:
                    raise _ApiError(409, "ConflictException", f"A job named {name!r} already exists")
            job_id = "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
            arn = f"arn:aws:bedrock:{self.region}:{self.account}:model-invocation-job/{job_id}"
            job = {
                "jobArn": arn,
                "jobName": name,
                "modelId": body["modelId"],
                "roleArn": body["roleArn"],
                "status": "Submitted",
                "submitTime": _now(),
                "lastModifiedTime": _now(),
                "inputDataConfig": body["inputDataConfig"],
                "outputDataConfig": body["outputDataConfig"],
                "timeoutDurationInHours": body.get("timeoutDurationInHours", 24),
                "_id": job_id,
                "_stop": threading.Event(),
            }
            if token:
                job["clientRequestToken"] = token
            self.jobs[job_id] = job
        t = threading.Thread(target=self._run, args=(job,), name=f"job-{job_id}", daemon=True)
        self._threads.append(t)
        t.start()
        return {"jobArn": arn}

    def _find(self, ident: str) -> dict:
        job_id = ident.rsplit("/", 1)[-1]
        with self._lock:
            if job_id not in self.jobs:
                raise _ApiError(404, "ResourceNotFoundException", f"Job {ident} not found")
            return self.jobs[job_id]

    @staticmethod
    def _public(job: dict) -> dict:
        return {k: v for k, v in job.items() if not k.startswith("_")}

    def _describe(self, job: dict) -> dict:
        with self._lock:
            return self._public(job)

    def _list(self, query: dict) -> dict:
        name = (query.get("nameContains") or [""])[0]
        status = (query.get("statusEquals") or [""])[0]
        max_results = int((query.get("maxResults") or ["1000"])[0])
        start = int((query.get("nextToken") or ["0"])[0])
        with self._lock:
            rows = [
                self._public(j)
                for j in self.jobs.values()
                if name in j["jobName"] and (not status or j["status"] == status)
            ]
        rows.sort(key=lambda j: j["submitTime"], reverse=(query.get("sortOrder") or ["Descending"])[0] == "Descending")
        page = rows[start : start + max_results]
        out = {"invocationJobSummaries": page}
        if start + max_results < len(rows):
            out["nextToken"] = str(start + max_results)
        return out

    def _stop(self, job: dict) -> dict:
        with self._lock:
            if job["status"] in TERMINAL:
                raise _ApiError(409, "ConflictException", f"Job {job['jobArn']} is {job['status']}; cannot stop")
            job["status"], job["lastModifiedTime"] = "Stopping", _now()
            job["_stop"].set()
        return {}

    # ------------------------------------------------------------------ the job runner
    def _set(self, job: dict, status: str, **extra) -> None:
        with self._lock:
            job["status"], job["lastModifiedTime"] = status, _now()
            job.update(extra)
            if status in TERMINAL:
                job["endTime"] = _now()

    def _wait(self, job: dict) -> bool:
        """Sleep one status step; False when a stop was requested."""
        return not (job["_stop"].wait(self.delay) or self._stopping.is_set())

    def _run(self, job: dict) -> None:
        try:
            for status in ("Validating", "Scheduled", "InProgress"):
                if not self._wait(job):
                    return self._set(job, "Stopped", message="Job stopped by user")
                self._set(job, status)
            self._process(job)
        except Exception as e:  # noqa: BLE001 - a crashed job is a Failed job
            self._set(job, "Failed", message=f"emulator: {type(e).__name__}: {e}")

    def _process(self, job: dict) -> None:
        s3 = self._s3()
        for sub, msg in self.fail_jobs.items():
            if sub in job["jobName"]:
                return self._set(job, "Failed", message=msg)
        in_bucket, in_key = split_s3(job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"])
        if in_key.endswith(".jsonl"):
            keys = [in_key]
        else:
            listing = s3.list_objects_v2(Bucket=in_bucket, Prefix=in_key).get("Contents", [])
            keys = sorted(o["Key"] for o in listing if o["Key"].endswith(".jsonl"))
        if not keys:
            return self._set(
                job,
                "Failed",
                message=f"No .jsonl input files found at {job['inputDataConfig']['s3InputDataConfig']['s3Uri']}",
            )
        out_bucket, out_key = split_s3(job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"])
        out_base = "/".join(p for p in (out_key.strip("/"), job["_id"]) if p)
        totals = {
            "totalRecordCount": 0,
            "processedRecordCount": 0,
            "successRecordCount": 0,
            "errorRecordCount": 0,
            "inputTokenCount": 0,
            "outputTokenCount": 0,
        }
        expire = any(sub in job["jobName"] for sub in self.expire_jobs)
        stopped = False
        for key in keys:
            lines = s3.get_object(Bucket=in_bucket, Key=key)["Body"].read().decode("utf-8").splitlines()
            records = [json.loads(x) for x in lines if x.strip()]
            with self._lock:
                self.received.setdefault(job["jobName"], []).extend(r.get("recordId") for r in records)
            totals["totalRecordCount"] += len(records)
            if expire:
                records = records[: len(records) // 2]
            out_lines = []
            for rec in records:
                if job["_stop"].is_set():
                    stopped = True
                    break
                out = self._answer(rec, job["modelId"], s3)
                count_output(totals, out)
                if rec["recordId"] in self.drop_records:
                    continue
                line = json.dumps(out)
                if rec["recordId"] in self.truncate_records:
                    line = line[: len(line) // 2]
                out_lines.append(line)
            if self.shuffle_output:
                random.Random(job["_id"]).shuffle(out_lines)
            name = key.rsplit("/", 1)[-1]
            s3.put_object(Bucket=out_bucket, Key=f"{out_base}/{name}.out", Body=("\n".join(out_lines) + "\n").encode())
            if stopped:
                break
        s3.put_object(Bucket=out_bucket, Key=f"{out_base}/manifest.json.out", Body=json.dumps(totals).encode())
        counts = {
            k: totals[k] for k in ("totalRecordCount", "processedRecordCount", "successRecordCount", "errorRecordCount")
        }
        if stopped:
            return self._set(job, "Stopped", message="Job stopped by user", **counts)
        if expire:
            return self._set(job, "Expired", message="Job did not complete within timeoutDurationInHours", **counts)
        final = "PartiallyCompleted" if totals["errorRecordCount"] and self.partial_on_record_errors else "Completed"
        self._set(job, final, **counts)

    def _answer(self, rec: dict, model_id: str, s3) -> dict:
        return answer_record(rec, model_id, s3, self)

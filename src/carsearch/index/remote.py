"""The index on object storage (`index.uri=s3://bucket/prefix`).

Layout under the prefix, the same as a local index folder (carsearch.index):

    s3://bucket/prefix/carsearch_index.json      the pointer readers follow (one PUT: atomic)
    s3://bucket/prefix/v-<time>-<hash>/cars.lance the LanceDB table (written by LanceDB itself)
    s3://bucket/prefix/v-<time>-<hash>/model/    the model that embedded it

build_index writes the table straight to the bucket, uploads the model, then replaces the pointer;
older versions beyond `index.keep_versions` are deleted after that. A searcher on any machine opens
`CarSearch("s3://bucket/prefix")`: it reads the pointer, downloads the model once (cached by its
content hash) and queries the table in place. Credentials come from the boto3 chain (env, profile,
SSO, instance role); `AWS_ENDPOINT_URL(_S3)` points at an S3-compatible store (MinIO, moto).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from carsearch.core.errors import CarsearchError
from carsearch.index.store import META_FILE, MODEL_SUBDIR


class RemoteIndexError(CarsearchError, ValueError):  # one line from the CLI and the stages, like other bad input
    pass


def split(uri: str) -> tuple[str, str]:
    """("bucket", "prefix/") of s3://bucket/prefix (the prefix with one trailing slash, or "")."""
    if not str(uri).startswith("s3://"):
        raise RemoteIndexError(f"index.uri {uri!r}: only s3:// object storage is supported")
    bucket, _, prefix = str(uri)[5:].partition("/")
    if not bucket:
        raise RemoteIndexError(f"index.uri {uri!r}: no bucket name")
    prefix = prefix.strip("/")
    return bucket, (prefix + "/") if prefix else ""


def join(uri: str, *parts: str) -> str:
    return "/".join([str(uri).rstrip("/"), *parts])


def client():
    import boto3

    return boto3.client("s3")  # boto3 >= 1.28 honours AWS_ENDPOINT_URL(_S3) itself


def _error(uri: str, what: str, e: Exception) -> RemoteIndexError:
    return RemoteIndexError(f"{uri}: {what}: {type(e).__name__}: {e}".splitlines()[0])


def put_json(uri: str, obj: dict) -> None:
    bucket, key = split(uri)
    try:
        client().put_object(
            Bucket=bucket,
            Key=key.rstrip("/"),
            Body=json.dumps(obj, indent=2, sort_keys=True).encode(),
            ContentType="application/json",
        )
    except Exception as e:  # noqa: BLE001 - botocore's many error types: one line naming the object
        raise _error(uri, "cannot write", e) from None


def get_json(uri: str) -> tuple[dict | None, str | None]:
    """(object, ETag) of a JSON object; (None, None) when it does not exist."""
    from botocore.exceptions import ClientError

    bucket, key = split(uri)
    try:
        r = client().get_object(Bucket=bucket, Key=key.rstrip("/"))
    except ClientError as e:
        if e.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NoSuchBucket"):
            return None, None
        raise _error(uri, "cannot read", e) from None
    except Exception as e:  # noqa: BLE001
        raise _error(uri, "cannot read", e) from None
    return json.loads(r["Body"].read()), r.get("ETag")


def upload_dir(local: Path, uri: str) -> int:
    bucket, prefix = split(uri)
    c, n = client(), 0
    for p in sorted(Path(local).rglob("*")):
        if p.is_file():
            c.upload_file(str(p), bucket, prefix + p.relative_to(local).as_posix())
            n += 1
    return n


def download_dir(uri: str, local: Path) -> Path:
    """Copy every object under `uri` into `local` (written beside, then renamed into place)."""
    import shutil
    import uuid

    bucket, prefix = split(uri)
    c = client()
    tmp = local.parent / f".{local.name}.{uuid.uuid4().hex[:8]}"
    try:
        n = 0
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                dest = tmp / o["Key"][len(prefix) :]
                dest.parent.mkdir(parents=True, exist_ok=True)
                c.download_file(bucket, o["Key"], str(dest))
                n += 1
        if not n:
            raise RemoteIndexError(
                f"{uri}: no objects (the index's model is missing; rebuild it: `dvc repro build_index`)"
            )
        try:
            os.replace(tmp, local)
        except OSError:  # another process put it there first: same content (content-addressed)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return local


def versions(uri: str) -> list[str]:
    bucket, prefix = split(uri)
    out = []
    for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        for cp in page.get("CommonPrefixes", []):
            name = cp["Prefix"][len(prefix) :].strip("/")
            if name.startswith("v-"):
                out.append(name)
    return sorted(out)


def delete_prefix(uri: str) -> int:
    bucket, prefix = split(uri)
    c, n = client(), 0
    for page in c.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            c.delete_objects(Bucket=bucket, Delete={"Objects": keys})
            n += len(keys)
    return n


def publish(uri: str, version: str, model_dir: Path | None, meta: dict, keep: int = 2) -> None:
    """After the table is written at `uri/version`: upload the model, replace the pointer, then
    delete versions older than the `keep` newest (a searcher on the old one keeps working meanwhile)."""
    try:
        if model_dir is not None and Path(model_dir).is_dir():
            upload_dir(Path(model_dir), join(uri, version, MODEL_SUBDIR))
        put_json(join(uri, META_FILE), {**meta, "version": version})
        old = [v for v in versions(uri) if v != version]
        for v in old[: max(0, len(old) - (keep - 1))]:
            delete_prefix(join(uri, v) + "/")
    except RemoteIndexError:
        raise
    except Exception as e:  # noqa: BLE001
        raise _error(uri, "cannot publish the index", e) from None


def model_cache_dir() -> Path:
    """Where searchers keep models downloaded from a remote index (by content hash)."""
    return Path(os.environ.get("CARSEARCH_CACHE") or Path.home() / ".cache" / "carsearch") / "models"


def fetch_model(uri: str, meta: dict) -> Path:
    """The local copy of the index's model (downloaded once per content hash)."""
    key = meta.get("content_hash") or meta["version"]
    local = model_cache_dir() / str(key).replace(":", "_").replace("/", "_")
    if not local.is_dir():
        local.parent.mkdir(parents=True, exist_ok=True)
        download_dir(join(uri, meta["version"], meta.get("model_dir") or MODEL_SUBDIR) + "/", local)
    return local

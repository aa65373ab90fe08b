"""Shared fixtures for the captioning tests: a moto S3 server and the Bedrock / chat-completions
EMULATORS (carsearch_emulators) on 127.0.0.1, dummy AWS credentials, and a small labelled image
set. Use with `pytest_plugins = ["tests.conftest_bedrock"]` or `from conftest_bedrock import *`.
No test talks to AWS."""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

_COLORS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 60), "white": (240, 240, 240)}
_BODIES = ("sedan", "suv", "pickup", "van")
_VIEWS = ("front", "rear", "side", "three-quarter")
_counter = itertools.count()


@pytest.fixture(scope="session")
def moto_url():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def aws_env(monkeypatch, tmp_path, moto_url):
    """Dummy credentials, a region, no ~/.aws, no instance metadata, S3 endpoint = moto."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_url)
    monkeypatch.delenv("CARSEARCH_BUCKET", raising=False)
    monkeypatch.delenv("CARSEARCH_BEDROCK_ROLE_ARN", raising=False)
    return moto_url


@pytest.fixture
def s3(aws_env):
    import boto3

    return boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")


@pytest.fixture
def bucket(s3):
    name = f"carsearch-test-{next(_counter)}-{random.getrandbits(24):06x}"
    s3.create_bucket(Bucket=name)
    return name


def make_image_set(root: Path, n: int, size: int = 48, unlabelled: int = 0) -> list[dict]:
    """`n` small PNG images under root/data/raw/images + manifest rows (the ingest format)."""
    from PIL import Image, ImageDraw

    img_dir = root / "data" / "raw" / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        color = list(_COLORS)[i % len(_COLORS)]
        im = Image.new("RGB", (size + i % 7, size), (i * 37 % 255, i * 91 % 255, i * 53 % 255))
        d = ImageDraw.Draw(im)
        d.rectangle([4 + i % 5, 10, size - 6, size - 12], fill=_COLORS[color])
        rid = f"{i:04d}{random.Random(i).getrandbits(48):012x}"
        path = img_dir / f"{rid}.png"
        im.save(path)
        labels = (
            None
            if i >= n - unlabelled
            else {
                "body_type": _BODIES[i % 4],
                "color": color,
                "view": _VIEWS[(i // 4) % 4],
                "make": "Acme",
                "model": f"M{i % 3}",
            }
        )
        rows.append(
            {
                "id": rid,
                "path": str(path.relative_to(root)),
                "width": im.width,
                "height": im.height,
                "bytes": path.stat().st_size,
                "source": "test",
                "labels": labels,
            }
        )
    (root / "data" / "raw" / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture
def image_set(tmp_path):
    root = tmp_path / "repo"
    rows = make_image_set(root, 12)
    return root, rows


@pytest.fixture
def emulator(aws_env, monkeypatch):
    """A factory: `emu = emulator(labels=..., fail_jobs=...)`; started, pointed to by
    $AWS_ENDPOINT_URL_BEDROCK, stopped after the test."""
    from carsearch_emulators import BedrockEmulator

    started = []

    def make(**kw):
        emu = BedrockEmulator(s3_endpoint_url=aws_env, **kw).start()
        started.append(emu)
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK", emu.url)
        return emu

    yield make
    for emu in started:
        emu.stop()


def clients(max_attempts: int = 3):
    """Real boto3 clients (endpoints from $AWS_ENDPOINT_URL_S3 / $AWS_ENDPOINT_URL_BEDROCK)."""
    import boto3
    from botocore.config import Config

    conf = Config(retries={"mode": "standard", "total_max_attempts": max_attempts})
    return boto3.client("s3", config=conf), boto3.client("bedrock", config=conf)


ROLE = "arn:aws:iam::123456789012:role/carsearch-bedrock-batch"


def caption_cfg(**over):
    """The composed `caption` section, typed (conf/caption/offline.yaml) with overrides (dotted keys)."""
    import yaml

    cfg = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "caption" / "offline.yaml").read_text())
    cfg["bedrock"].update(poll_initial_s=0.02, poll_max_s=0.1, api_backoff_s=0.01, role_arn=ROLE)
    for k, v in over.items():
        cur = cfg
        *path, last = k.split(".")
        for p in path:
            cur = cur.setdefault(p, {})
        cur[last] = v
    from carsearch.core.schema import Caption

    return Caption.model_validate(cfg)

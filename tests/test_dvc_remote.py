"""The shipped DVC remote (.dvc/config) pushes and pulls pipeline outputs through S3: here a
moto server on 127.0.0.1 (endpoint from $AWS_ENDPOINT_URL_S3, bucket overridden per clone with
`dvc remote modify --local`), never AWS."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from configobj import ConfigObj

from conftest_bedrock import aws_env, bucket, moto_url, s3  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))

STAGES = """\
stages:
  make_jsonl:
    cmd: python make.py
    deps:
      - make.py
    outs:
      - data/jsonl
  caption_batch:
    cmd: python caption.py
    deps:
      - caption.py
      - data/jsonl
    outs:
      - data/captions
"""
MAKE = """import pathlib
p = pathlib.Path("data/jsonl"); p.mkdir(parents=True, exist_ok=True)
(p / "part-00000.jsonl").write_text('{"recordId": "a", "modelInput": {}}\\n')
"""
CAPTION = """import pathlib
p = pathlib.Path("data/captions"); p.mkdir(parents=True, exist_ok=True)
(p / "part-00000.jsonl.out").write_text(pathlib.Path("data/jsonl/part-00000.jsonl").read_text())
(p / "manifest.json.out").write_text('{"totalRecordCount": 1}')
"""


def _run(cwd, *args, env):
    r = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{' '.join(args)}\n{r.stdout}\n{r.stderr}"
    return r.stdout


def test_shipped_remote_is_s3_with_env_overridable_endpoint():
    cfg = ConfigObj(str(REPO / ".dvc" / "config"))
    assert cfg["core"]["remote"] == "s3"
    assert cfg['remote "s3"']["url"].startswith("s3://")
    assert "endpointurl" not in cfg['remote "s3"']  # endpoint comes from $AWS_ENDPOINT_URL_S3 / the boto chain


def test_push_and_pull_pipeline_outputs_through_moto(tmp_path, aws_env, bucket, s3):
    repo = tmp_path / "clone"
    repo.mkdir()
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("CARSEARCH_ROOT", None)
    _run(repo, "git", "init", "-q", env=env)
    _run(repo, DVC, "init", "-q", env=env)
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the shipped remote, as in a fresh clone
    cfg = ConfigObj(str(repo / ".dvc" / "config"))
    del cfg["hydra"]  # no conf/ in this scratch repo
    cfg.write()
    _run(repo, DVC, "remote", "modify", "--local", "s3", "url", f"s3://{bucket}/dvc", env=env)
    (repo / "dvc.yaml").write_text(STAGES)
    (repo / "make.py").write_text(MAKE)
    (repo / "caption.py").write_text(CAPTION)
    _run(repo, DVC, "repro", env=env)
    _run(repo, DVC, "push", env=env)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(keys) >= 3 and all(k.startswith("dvc/files/md5/") for k in keys)
    expected = (repo / "data/captions/part-00000.jsonl.out").read_text()
    shutil.rmtree(repo / "data")
    shutil.rmtree(repo / ".dvc" / "cache")
    _run(repo, DVC, "pull", env=env)
    assert (repo / "data/captions/part-00000.jsonl.out").read_text() == expected

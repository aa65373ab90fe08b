"""The S3 data source against a real S3 protocol server (moto) on 127.0.0.1, through boto3."""

import io

import pytest
from PIL import Image

from carsearch.sources import files as data
from conftest_bedrock import aws_env, bucket, moto_url, s3  # noqa: F401  (pytest fixtures)


def _jpeg(color, size=(48, 40)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="JPEG")
    return buf.getvalue()


def test_s3_prefix_ingests_with_labels_and_rejects(s3, bucket, tmp_path):  # noqa: F811
    put = lambda key, body: s3.put_object(Bucket=bucket, Key=key, Body=body)  # noqa: E731
    put("cams/red/a.jpg", _jpeg((200, 0, 0)))
    put("cams/b.jpg", _jpeg((0, 0, 200)))
    put("cams/broken.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    put("cams/labels.csv", "file,body_type,view\nb.jpg,van,rear\n")
    put("other/c.jpg", _jpeg((0, 200, 0)))  # outside the prefix
    items = list(data.iter_s3(f"s3://{bucket}/cams"))
    rows, rejects = data.ingest_items(items, tmp_path / "img", tmp_path, "s3")
    labels = {r["origin"]: r["labels"] for r in rows}
    assert labels == {
        f"s3://{bucket}/cams/b.jpg": {"body_type": "van", "view": "rear"},
        f"s3://{bucket}/cams/red/a.jpg": {"color": "red"},
    }
    assert [(r.path, r.reason.split(" (")[0]) for r in rejects] == [
        (f"s3://{bucket}/cams/broken.jpg", "corrupt or truncated image")
    ]
    assert all((tmp_path / r["path"]).is_file() for r in rows)


def test_s3_errors_name_the_setting(s3):  # noqa: F811
    with pytest.raises(ValueError, match="data.s3.uri: expected s3://"):
        list(data.iter_s3("https://example.com/x"))
    with pytest.raises(ValueError, match=r"data.s3.uri s3://no-such-bucket-xyz/p: cannot list objects"):
        list(data.iter_s3("s3://no-such-bucket-xyz/p"))

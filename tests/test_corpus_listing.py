"""The corpus listing DVC tracks instead of every photo (carsearch.sources.listing, stage
list_corpus): files added, removed and changed (size or mtime) change it; an unchanged corpus
leaves the file untouched (DVC's hash and build_index stay up to date); S3: key, size, ETag."""

from __future__ import annotations

import os

from carsearch.sources import listing
from conftest_bedrock import aws_env, bucket, moto_url, s3  # noqa: F401  (pytest fixtures)


def test_listing_detects_added_removed_changed_and_keeps_an_unchanged_file(tmp_path):
    photos, out = tmp_path / "photos", tmp_path / "data/corpus_listing.tsv"
    (photos / "red").mkdir(parents=True)
    for name in ("red/a.jpg", "b.jpg", ".hidden.jpg"):
        (photos / name).write_bytes(b"x" * 10)
    assert listing.write_listing(out, listing.folder_lines(photos)) == (2, 20, True)
    assert [ln.split("\t")[:2] for ln in out.read_text().splitlines()] == [["b.jpg", "10"], ["red/a.jpg", "10"]]
    before = out.stat().st_mtime_ns
    assert listing.write_listing(out, listing.folder_lines(photos))[2] is False
    assert out.stat().st_mtime_ns == before  # untouched
    text = {}
    (photos / "c.jpg").write_bytes(b"y")  # added
    text["added"] = listing.write_listing(out, listing.folder_lines(photos))
    (photos / "b.jpg").unlink()  # removed
    text["removed"] = listing.write_listing(out, listing.folder_lines(photos))
    os.utime(photos / "red/a.jpg", ns=(1, 1))  # changed (same size, new mtime)
    text["changed"] = listing.write_listing(out, listing.folder_lines(photos))
    assert {k: v[2] for k, v in text.items()} == {"added": True, "removed": True, "changed": True}
    assert not list(out.parent.glob(".*.tmp"))


def test_s3_listing_has_keys_sizes_and_etags(s3, bucket):  # noqa: F811
    s3.put_object(Bucket=bucket, Key="cams/a.jpg", Body=b"abc")
    s3.put_object(Bucket=bucket, Key="cams/red/b.jpg", Body=b"abcd")
    s3.put_object(Bucket=bucket, Key="other/c.jpg", Body=b"x")
    lines = [ln.split("\t") for ln in listing.s3_lines(f"s3://{bucket}/cams")]
    assert [(k, s) for k, s, _ in lines] == [("a.jpg", "3"), ("red/b.jpg", "4")]
    assert all(len(e) == 32 for _, _, e in lines)  # the objects' MD5 ETags

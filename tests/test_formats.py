"""Request/response formats of the Bedrock batch files, per model family."""

from __future__ import annotations

import base64
import io
import json

import pytest
from PIL import Image

from carsearch.captioning import formats


def _png(w=32, h=24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 0, 0)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "mid,family",
    [
        ("anthropic.claude-3-haiku-20240307-v1:0", "claude"),
        ("us.anthropic.claude-3-5-sonnet-20241022-v2:0", "claude"),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/eu.anthropic.claude-3-haiku-20240307-v1:0",
            "claude",
        ),
        ("amazon.nova-lite-v1:0", "nova"),
        ("apac.amazon.nova-pro-v1:0", "nova"),
    ],
)
def test_family_from_model_id(mid, family):
    assert formats.model_family(mid) == family


def test_unknown_family_names_the_setting():
    with pytest.raises(formats.FormatError, match=r"caption.model_id: unknown model family for 'meta.llama3"):
        formats.model_family("meta.llama3-2-90b-instruct-v1:0")
    with pytest.raises(formats.FormatError, match="text-only"):
        formats.model_family("amazon.nova-micro-v1:0")
    with pytest.raises(formats.FormatError, match="caption.family"):
        formats.model_family("x", "gpt")
    assert formats.model_family("local-vlm", "claude") == "claude"


def test_claude_request_is_the_documented_messages_body():
    body = formats.claude_request(_png(), "sys", "describe", 300, 0.0)
    assert body["anthropic_version"] == "bedrock-2023-05-31" and body["max_tokens"] == 300
    img = body["messages"][0]["content"][0]
    assert img["type"] == "image" and img["source"]["media_type"] == "image/png"
    assert base64.b64decode(img["source"]["data"]) == _png()
    rec = formats.validate_record(formats.request_record("abc", body), "claude")
    assert rec["recordId"] == "abc"


def test_nova_request_references_the_image_on_s3():
    body = formats.nova_request(
        "s3://my-bucket/p/input/part-00000/images/x.jpg",
        "jpeg",
        "sys",
        "describe",
        300,
        0.0,
        bucket_owner="123456789012",
    )
    assert body["schemaVersion"] == "messages-v1" and body["system"] == [{"text": "sys"}]
    img = body["messages"][0]["content"][0]["image"]
    assert img == {
        "format": "jpeg",
        "source": {
            "s3Location": {"uri": "s3://my-bucket/p/input/part-00000/images/x.jpg", "bucketOwner": "123456789012"}
        },
    }
    assert body["inferenceConfig"] == {"maxTokens": 300, "temperature": 0.0}
    formats.validate_record({"recordId": "r1", "modelInput": body}, "nova")


@pytest.mark.parametrize(
    "family,mutate,msg",
    [
        ("claude", lambda b: b.pop("anthropic_version"), "anthropic_version"),
        ("claude", lambda b: b.update(max_tokens=0), "max_tokens"),
        ("claude", lambda b: b["messages"][0]["content"][0]["source"].update(media_type="image/bmp"), "media_type"),
        (
            "nova",
            lambda b: b["messages"][0]["content"][0]["image"]["source"]["s3Location"].update(uri="/local/x.jpg"),
            "uri",
        ),
        ("nova", lambda b: b.update(schemaVersion="v2"), "schemaVersion"),
        ("nova", lambda b: b.update(anthropic_version="x"), "anthropic_version"),
    ],
)
def test_schema_violations_name_record_and_field(family, mutate, msg):
    body = (
        formats.claude_request(_png(), "s", "u")
        if family == "claude"
        else formats.nova_request("s3://bucket-a/k/i.jpg", "jpeg", "s", "u")
    )
    mutate(body)
    with pytest.raises(formats.FormatError, match=rf"part-00000.jsonl:7 record 'r7': .*{msg}"):
        formats.validate_record({"recordId": "r7", "modelInput": body}, family, where="part-00000.jsonl:7")


def test_claude_request_cannot_pass_as_nova():
    body = formats.claude_request(_png(), "s", "u")
    with pytest.raises(formats.FormatError, match=r"^record 'r': schemaVersion: Field required"):
        formats.validate_record({"recordId": "r", "modelInput": body}, "nova")


def test_output_lines_malformed_truncated_or_incomplete():
    good = json.dumps({"recordId": "r1", "modelInput": {}, "modelOutput": formats.nova_response("{}", 1, 1)})
    assert formats.parse_output_line(good, "f:1")["recordId"] == "r1"
    with pytest.raises(formats.FormatError, match=r"f:2 \(record 'r1'\): malformed or truncated"):
        formats.parse_output_line(good[: len(good) // 2], "f:2")
    with pytest.raises(formats.FormatError, match="f:3: malformed"):
        formats.parse_output_line("{not json", "f:3")
    with pytest.raises(formats.FormatError, match="no recordId"):
        formats.parse_output_line('{"modelOutput": {}}', "f:4")
    with pytest.raises(formats.FormatError, match="neither modelOutput nor error"):
        formats.parse_output_line('{"recordId": "r9", "modelInput": {}}', "f:5")


def test_response_text_tokens_and_stop_reason_for_every_shape():
    c = formats.claude_response("hi", "anthropic.claude-3-haiku-20240307-v1:0", 10, 2, stop_reason="refusal")
    n = formats.nova_response("hi", 10, 2, stop_reason="content_filtered")
    o = {
        "choices": [{"message": {"content": "hi"}, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2},
    }
    for out, stop in ((c, "refusal"), (n, "content_filtered"), (o, "length")):
        assert (
            formats.response_text(out) == "hi"
            and formats.usage_tokens(out) == (10, 2)
            and formats.stop_reason(out) == stop
        )

"""One record's answer in the Bedrock emulator (carsearch_emulators.bedrock): a record error, a
scripted answer or refusal, else `carsearch.captioning.offline.offline_output` from the labels and
frame the test gave; a Nova record's image must exist at its s3Location (its size gives the tokens)."""

from __future__ import annotations

from carsearch.captioning import formats
from carsearch.captioning.offline import offline_output
from carsearch.core import imaging


def split_s3(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def answer_record(rec: dict, model_id: str, s3, knobs) -> dict:
    """The output record for `rec`; `knobs`: the emulator (record_errors, answers, refuse, labels, frames)."""
    rid, body = rec.get("recordId"), rec.get("modelInput") or {}
    if rid in knobs.record_errors:
        code, msg = knobs.record_errors[rid]
        return formats.output_record(rid, body, error={"errorCode": code, "errorMessage": msg})
    image_tokens = None
    if "schemaVersion" in body:  # Nova: the image must exist at its s3Location
        for msg in body.get("messages", []):
            for block in msg.get("content", []):
                loc = (block.get("image") or {}).get("source", {}).get("s3Location")
                if loc:
                    b, k = split_s3(loc["uri"])
                    try:
                        data = s3.get_object(Bucket=b, Key=k)["Body"].read()
                    except Exception:
                        return formats.output_record(
                            rid,
                            body,
                            error={"errorCode": 400, "errorMessage": f"Unable to access the image at {loc['uri']}"},
                        )
                    with imaging.open_image(data) as im:
                        image_tokens = (im.size[0] * im.size[1]) // 750
    if rid in knobs.answers or rid in knobs.refuse:
        text = knobs.answers.get(rid, "I'm sorry, I can't help with identifying this image.")
        stop = "refusal" if rid in knobs.refuse else "end_turn"
        if "schemaVersion" in body:
            out = formats.nova_response(text, 100, 20, "content_filtered" if rid in knobs.refuse else "end_turn")
        else:
            out = formats.claude_response(text, model_id, 100, 20, stop_reason=stop)
        return formats.output_record(rid, body, model_output=out)
    return offline_output(rec, knobs.labels.get(rid), model_id, image_tokens=image_tokens, frame=knobs.frames.get(rid))

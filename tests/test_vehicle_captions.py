"""Every vehicle of a frame from the LLM path: the vehicles prompt in each backend's request form,
`parse_vehicles` (good, fenced, malformed answers), the offline captioner and both emulators
restating known boxes, and curate making one pair per vehicle (a frame's vehicles in one split)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from carsearch.captioning import bedrock, formats, offline, openai_compat
from carsearch.captioning import requests as batch
from carsearch.captioning.parse import CaptionError
from carsearch.captioning.vehicles import parse_vehicle_answer, parse_vehicles
from carsearch.curation.curate import curate
from carsearch.sources.boxes import vehicle_id
from carsearch_emulators import ChatCompletionsEmulator
from conftest_bedrock import ROLE, aws_env, bucket, caption_cfg, clients, emulator, make_image_set, moto_url, s3  # noqa: F401
from testkit import section

MID = "anthropic.claude-3-haiku-20240307-v1:0"
CURATE = section(
    "curate",
    **{
        "splits": {"train": 0.5, "val": 0.0, "test": 0.5},
        "near_duplicate_max_distance": -1,
        "require_fields": [],
        "boxes": {"margin": 0.1, "min_side": 8},
    },
)
BOXES = (  # in the frame's pixels (ingest's `boxes`); frames are ~96x96
    {"x1": 4.0, "y1": 8.0, "x2": 44.0, "y2": 60.0, "class": "car", "labels": {"color": "red", "view": "front"}},
    {"x1": 50.0, "y1": 30.0, "x2": 90.0, "y2": 90.0, "class": "van", "labels": {"color": "blue", "body_type": "van"}},
)


def _png(w: int = 32, h: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def _annotated(root: Path, n: int = 4, size: int = 96) -> list[dict]:
    rows = make_image_set(root, n, size=size)
    for r in rows:
        r["boxes"] = [{**b, "score": None, "source": "yolo"} for b in BOXES]
    return rows


def _records(jsonl: Path) -> list[dict]:
    return [json.loads(x) for f in sorted(jsonl.glob("*.jsonl")) for x in f.read_text().splitlines()]


def _frames(rows):
    return {r["id"]: r for r in rows}


def _labels(rows):
    return {r["id"]: r["labels"] for r in rows}


def _assert_same_boxes(got: list[dict], given: list[dict], tol: float = 0.2):
    assert len(got) == len(given)
    for g, b in zip(got, given):
        assert [g[k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(
            [b[k] for k in ("x1", "y1", "x2", "y2")], abs=tol
        )
        assert g["class"] == b["class"] and g["source"] == "llm"
        assert {k: v for k, v in b["labels"].items()}.items() <= g["labels"].items()
        assert len(g["caption"]) >= 8


# ------------------------------------------------------------------ requests per backend
def test_claude_request_carries_the_vehicles_prompt_with_the_size_as_sent(tmp_path):
    rows = make_image_set(tmp_path, 2, size=96)
    cfg = caption_cfg(vehicles=True, max_image_edge=64)  # resized: the prompt states the size sent
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", cfg)
    rec = _records(tmp_path / "jsonl")[0]
    body = rec["modelInput"]
    formats.validate_record(rec, "claude")
    img, text = body["messages"][0]["content"]
    assert img["type"] == "image" and text["type"] == "text"
    with Image.open(io.BytesIO(base64.b64decode(img["source"]["data"]))) as im:
        sent = im.size
    assert max(sent) == 64 and sent != (rows[0]["width"], rows[0]["height"])
    assert f"The image is {sent[0]}x{sent[1]} pixels" in text["text"] and '"vehicles": [' in text["text"]
    assert "motorcycle" in text["text"] and "three-quarter" in text["text"]
    assert body["system"] == formats.VEHICLES_SYSTEM_PROMPT
    assert formats.wants_vehicles(body) and formats.stated_image_size(body) == sent


def test_nova_request_carries_the_vehicles_prompt_beside_the_s3_image(tmp_path):
    rows = make_image_set(tmp_path, 2, size=96)
    cfg = caption_cfg(vehicles=True, vehicles_max_tokens=1500, model_id="amazon.nova-lite-v1:0")
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", cfg, bucket="my-bucket")
    rec = _records(tmp_path / "jsonl")[1]
    body = rec["modelInput"]
    formats.validate_record(rec, "nova")
    image, text = body["messages"][0]["content"]
    assert image["image"]["source"]["s3Location"]["uri"].startswith("s3://my-bucket/")
    w, h = rows[1]["width"], rows[1]["height"]  # within the limits: sent as stored
    assert f"The image is {w}x{h} pixels" in text["text"] and formats.wants_vehicles(body)
    assert body["inferenceConfig"] == {"maxTokens": 1500, "temperature": 0.0}
    assert body["system"] == [{"text": formats.VEHICLES_SYSTEM_PROMPT}]


def test_chat_request_carries_the_vehicles_prompt_and_a_data_url(tmp_path):
    rows = make_image_set(tmp_path, 1, size=96)
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", caption_cfg(vehicles=True))
    chat = openai_compat.chat_request(_records(tmp_path / "jsonl")[0], "qwen2.5-vl")
    image, text = chat["messages"][1]["content"]
    assert image["type"] == "image_url" and image["image_url"]["url"].startswith("data:image/png;base64,")
    assert text["type"] == "text" and f"The image is {rows[0]['width']}x{rows[0]['height']} pixels" in text["text"]
    assert formats.wants_vehicles(chat) and formats.stated_image_size(chat) == (rows[0]["width"], rows[0]["height"])


def test_default_path_is_todays_single_caption(tmp_path):
    rows = make_image_set(tmp_path, 2)
    cfg = caption_cfg()
    index = batch.make_requests(rows, tmp_path, tmp_path / "jsonl", cfg)
    body = _records(tmp_path / "jsonl")[0]["modelInput"]
    assert body["messages"][0]["content"][1]["text"] == cfg.user_prompt and body["system"] == cfg.system_prompt
    assert not formats.wants_vehicles(body) and formats.stated_image_size(body) is None
    on = batch.make_requests(rows, tmp_path, tmp_path / "j2", caption_cfg(vehicles=True))
    assert (
        batch.make_requests(rows, tmp_path, tmp_path / "j3", caption_cfg(vehicles=False))["batch_key"]
        == (index["batch_key"])
    )
    assert on["batch_key"] != index["batch_key"]


# ------------------------------------------------------------------ parse_vehicles
GOOD = {
    "caption": "Two vehicles at a crossing.",
    "vehicles": [
        {"box": [10, 20, 110, 90], "class": "car", "color": "Gray", "body_type": "saloon", "view": "back",
         "caption": "A grey sedan seen from behind."},
        {"box": [150, 40, 300, 200], "class": "SUV", "color": "red", "view": "unknown",
         "caption": "A red SUV on the right."},
    ],
}  # fmt: skip


def test_good_answer_gives_contract_boxes_normalised_with_the_vocabulary():
    boxes, rejected = parse_vehicles(json.dumps(GOOD), 320, 240, 16, frame_id="f1")
    assert rejected == []
    a, b = boxes
    assert (a["x1"], a["y1"], a["x2"], a["y2"]) == (10, 20, 110, 90)
    assert a["frame"] == "f1" and a["source"] == "llm" and a["score"] is None and a["class"] == "car"
    assert a["labels"] == {"color": "grey", "body_type": "sedan", "view": "rear"}
    assert a["caption"] == "A grey sedan seen from behind."
    assert b["class"] == "suv" and b["labels"] == {"color": "red", "body_type": "suv"}  # "unknown" is no label


def test_fenced_and_prose_wrapped_answers_parse():
    fenced = f"Here you go:\n```json\n{json.dumps(GOOD, indent=1)}\n```\nHope that helps {{:"
    ans = parse_vehicle_answer(fenced, 320, 240, 16)
    assert ans.caption == "Two vehicles at a crossing." and len(ans.boxes) == 2 and ans.rejected == []


def test_boxes_in_the_image_as_sent_are_scaled_to_the_frame():
    boxes, _ = parse_vehicles(json.dumps(GOOD), 640, 480, 16, sent_size=(320, 240))
    assert [boxes[0][k] for k in ("x1", "y1", "x2", "y2")] == [20, 40, 220, 180]


def test_normalised_coordinates_are_scaled_and_said_so():
    ans = {"vehicles": [{"box": [0.1, 0.25, 0.5, 1.0], "class": "bus", "caption": "A bus in the left lane."}]}
    (box,), rejected = parse_vehicles(json.dumps(ans), 200, 100, 8)
    assert rejected == [] and [box[k] for k in ("x1", "y1", "x2", "y2")] == [20, 25, 100, 100]
    assert "normalised coordinates" in box["note"] and "200x100" in box["note"]


def test_each_malformed_vehicle_is_rejected_with_a_reason_naming_it():
    v = {"class": "car", "caption": "A car somewhere in the frame."}
    ans = {
        "caption": "Busy road.",
        "vehicles": [
            {**v, "box": [10, 10, 100, 100]},  # 1 good
            {**v, "box": [10, 10, 100]},  # 2 three numbers
            {**v, "box": ["10", 10, 100, 100]},  # 3 a string
            {**v, "box": [400, 10, 500, 100]},  # 4 outside the 320x240 image
            {**v, "box": [200, 200, 205, 230]},  # 5 5 px wide
            {**v, "box": [11, 11, 100, 101]},  # 6 duplicate of 1
            {**v, "box": [150, 20, 250, 120], "color": "teal"},  # 7 unknown colour
            {**v, "box": [150, 20, 250, 120], "class": "boat"},  # 8 unknown class
            {**v, "box": [150, 20, 250, 120], "caption": ""},  # 9 no caption
            "a car",  # 10 not an object
            {**v, "box": [100, 100, 50, 150]},  # 11 no area
            {**v},  # 12 no box
        ],
    }
    boxes, rejected = parse_vehicles(json.dumps(ans), 320, 240, 16)
    assert [b["vehicle"] for b in boxes] == [1]
    why = {int(r.split()[1].rstrip(":")): r for r in rejected}
    assert sorted(why) == list(range(2, 13))
    assert "vehicle 2 box [10, 10, 100]: " in why[2] and "is not 4 numbers" in why[2]
    assert "is not 4 numbers" in why[3] and "'10'" in why[3]
    assert "vehicle 4 box [400, 10, 500, 100]" in why[4] and "outside the 320x240 image" in why[4]
    assert "smaller than" in why[5] and "16 px" in why[5]
    assert "duplicate of vehicle 1" in why[6] and "one caption per box" in why[6]
    assert "color 'teal' is not one of" in why[7]
    assert "class 'boat' is not one of car, truck, bus" in why[8]
    assert "no caption" in why[9]
    assert "vehicle 10: 'a car' is not an object" == why[10]
    assert "has no area" in why[11]
    assert "box None is not 4 numbers" in why[12]


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "empty answer"),
        ("I see two cars.", "no JSON object"),
        ('{"caption": "x", "vehicles": [{"box": [1, 2', "no JSON object"),
        ('{"caption": "Two cars."}', "field 'vehicles': missing"),
        ('{"caption": "Two cars.", "vehicles": {"box": [1, 2, 3, 4]}}', "field 'vehicles': not a list"),
    ],
)
def test_unusable_answers_say_why(text, msg):
    with pytest.raises(CaptionError, match=msg):
        parse_vehicles(text, 320, 240, 16)


# ------------------------------------------------------------------ offline captioner
def test_offline_captioner_restates_known_boxes_in_the_size_as_sent():
    frame = {"id": "f", "width": 640, "height": 480, "boxes": [{**b, "x2": b["x2"] * 4} for b in BOXES]}
    body = formats.claude_request(_png(320, 240), "s", formats.vehicles_prompt(320, 240))
    out = offline.offline_output({"recordId": "f", "modelInput": body}, {"scene": "day"}, MID, frame=frame)
    answer = json.loads(formats.response_text(out["modelOutput"]))
    assert answer["vehicles"][0]["box"] == [2.0, 4.0, 88.0, 30.0]  # halved: the image sent is 320x240
    boxes, rejected = parse_vehicles(formats.response_text(out["modelOutput"]), 640, 480, 8, sent_size=(320, 240))
    assert rejected == []
    _assert_same_boxes(boxes, frame["boxes"])
    # no labels and no boxes: a record error, as today
    err = offline.offline_output({"recordId": "g", "modelInput": body}, None, MID, frame={"boxes": []})
    assert "no labels and no boxes" in err["error"]["errorMessage"]
    # a labelled frame without boxes: no vehicles, the frame's caption
    plain = offline.offline_output({"recordId": "h", "modelInput": body}, {"color": "red"}, MID)
    assert json.loads(formats.response_text(plain["modelOutput"]))["vehicles"] == []


def test_offline_run_keys_the_cache_on_boxes_only_for_vehicles_requests(tmp_path):
    rows = _annotated(tmp_path / "repo", 3)
    root = tmp_path / "repo"
    batch.make_requests(rows, root, root / "jsonl", caption_cfg(vehicles=True))
    inputs = sorted((root / "jsonl").glob("*.jsonl"))
    offline.run_offline(inputs, root / "out", _labels(rows), MID, progress=False, frames_by_id=_frames(rows))
    for line in (root / "out" / "part-00000.jsonl.out").read_text().splitlines():
        rec = json.loads(line)
        row = _frames(rows)[rec["recordId"]]
        boxes, rejected = parse_vehicles(formats.response_text(rec["modelOutput"]), row["width"], row["height"], 8)
        assert rejected == []
        _assert_same_boxes(boxes, row["boxes"])
    assert offline.offline_key_extra({"color": "red"}) == {"labels": {"color": "red"}}  # today's key


# ------------------------------------------------------------------ emulators
def test_bedrock_emulator_answers_vehicles_json_through_boto3(tmp_path, bucket, emulator):  # noqa: F811
    root = tmp_path / "repo"
    rows = _annotated(root, 4)
    emulator(labels=_labels(rows), frames=_frames(rows))
    cfg = caption_cfg(
        **{
            "vehicles": True,
            "model_id": MID,
            "s3.bucket": bucket,
            "quotas.min_records_per_job": 2,
            "max_image_edge": 64,
        }
    )
    jsonl = root / "data" / "jsonl"
    index = batch.make_requests(rows, root, jsonl, cfg, bucket=bucket)
    settings = bedrock.settings_from_cfg(cfg)
    shards = bedrock.shard_jobs(jsonl, index, bucket, settings.prefix)
    state = root / ".carsearch" / "jobs" / "state.json"
    out = root / "data" / "captions"
    result = bedrock.run_bedrock(shards, out, settings, state, *clients(), log=lambda s: None)
    assert result["succeeded"] == 4
    lines = [json.loads(x) for x in (out / "part-00000.jsonl.out").read_text().splitlines()]
    assert len(lines) == 4
    for rec in lines:
        row = _frames(rows)[rec["recordId"]]
        sent = formats.stated_image_size(rec["modelInput"])
        assert max(sent) == 64  # boxes answered in the pixels of the image sent, scaled back here
        boxes, rejected = parse_vehicles(
            formats.response_text(rec["modelOutput"]), row["width"], row["height"], 8, sent_size=sent
        )
        assert rejected == []
        _assert_same_boxes(boxes, row["boxes"], tol=1.0)
    by_split, rejects = curate(
        sorted(jsonl.glob("*.jsonl")), [out / "part-00000.jsonl.out"], _frames(rows), root, CURATE, 0
    )
    assert rejects == [] and sum(len(v) for v in by_split.values()) == 8


def test_openai_emulator_answers_vehicles_json(tmp_path):
    root = tmp_path / "repo"
    rows = _annotated(root, 3)
    batch.make_requests(rows, root, root / "jsonl", caption_cfg(vehicles=True, model_id="local-vlm", family="claude"))
    inputs = sorted((root / "jsonl").glob("*.jsonl"))
    with ChatCompletionsEmulator(labels=_labels(rows), frames=_frames(rows)) as emu:
        s = openai_compat.OpenAISettings(base_url=emu.url, model="qwen2.5-vl", backoff_s=0.01)
        totals = openai_compat.run_openai(inputs, root / "out", s, progress=False)
    assert totals["successRecordCount"] == 3
    assert all(formats.wants_vehicles(r) for r in emu.requests)
    for line in (root / "out" / "part-00000.jsonl.out").read_text().splitlines():
        rec = json.loads(line)
        row = _frames(rows)[rec["recordId"]]
        boxes, rejected = parse_vehicles(formats.response_text(rec["modelOutput"]), row["width"], row["height"], 8)
        assert rejected == []
        _assert_same_boxes(boxes, row["boxes"])
    # the single-caption request of the same server is answered as today
    batch.make_requests(rows, root, root / "j2", caption_cfg(vehicles=False, model_id="local-vlm", family="claude"))
    rec = _records(root / "j2")[0]
    with ChatCompletionsEmulator(labels=_labels(rows), frames=_frames(rows)) as emu:
        s = openai_compat.OpenAISettings(base_url=emu.url, model="qwen2.5-vl", backoff_s=0.01)
        answer = json.loads(formats.response_text(openai_compat.answer(rec, s)["modelOutput"]))
    assert "vehicles" not in answer and answer["body_type"] == rows[0]["labels"]["body_type"]


# ------------------------------------------------------------------ curate
def _vehicles_run(tmp_path: Path, answers: dict[str, str]) -> tuple[list[Path], list[Path]]:
    body = formats.claude_request(_png(96, 96), "s", formats.vehicles_prompt(96, 96))
    inp = tmp_path / "part-00000.jsonl"
    inp.write_text("".join(json.dumps({"recordId": rid, "modelInput": body}) + "\n" for rid in answers))
    out = tmp_path / "part-00000.jsonl.out"
    out.write_text(
        "".join(
            json.dumps(formats.output_record(rid, body, model_output=formats.claude_response(text, MID, 5, 5))) + "\n"
            for rid, text in answers.items()
        )
    )
    return [inp], [out]


def test_curate_makes_a_pair_per_vehicle_and_a_reject_per_bad_one(tmp_path):
    rows = make_image_set(tmp_path, 8, size=96)
    rows[0]["boxes"] = [{**b, "score": None, "source": "yolo"} for b in BOXES]
    v = {"class": "car", "color": "green", "caption": "A green car in the lane."}
    answers = {}
    for r in rows:
        answers[r["id"]] = json.dumps(
            {
                "caption": "Three vehicles on a road.",
                "vehicles": [
                    {**v, "box": [4, 8, 44, 60]},
                    {**v, "box": [50, 30, 90, 90], "class": "van"},
                    {**v, "box": [5, 8, 44, 60]},  # duplicate of the first
                    {**v, "box": [60, 2, 90, "x"]},  # not 4 numbers
                ],
            }
        )
    answers[rows[7]["id"]] = json.dumps({"caption": "An empty road at night.", "vehicles": []})
    inputs, outputs = _vehicles_run(tmp_path, answers)
    manifest = {r["id"]: r for r in rows}
    by_split, rejects = curate(inputs, outputs, manifest, tmp_path, CURATE, 0, margin=0.25, min_side=8)
    pairs = [p for ps in by_split.values() for p in ps]
    vehicles = [p for p in pairs if "frame_id" in p]
    assert len(vehicles) == 7 * 2 and len(rejects) == 7 * 2
    assert all(r["reason"].startswith("bad vehicle: vehicle ") for r in rejects)
    assert sum("duplicate of vehicle 1" in r["reason"] for r in rejects) == 7
    assert sum("is not 4 numbers" in r["reason"] for r in rejects) == 7
    for p in vehicles:
        box = dict(zip(("x1", "y1", "x2", "y2"), p["box"]))
        assert p["id"] == vehicle_id(p["frame_id"], box, 0.25) and p["margin"] == 0.25
        assert p["path"] == manifest[p["frame_id"]]["path"] and p["caption"] == "A green car in the lane."
    # a frame's vehicles share one split: its frame id's
    split_of_frame = {}
    for split, ps in by_split.items():
        for p in ps:
            assert split_of_frame.setdefault(p.get("frame_id", p["id"]), split) == split
    assert len(set(split_of_frame.values())) == 2  # both splits used across frames
    # the annotated frame: the source's box labels win, overlaying the frame's; others: what the model said
    first = sorted((p for p in vehicles if p["frame_id"] == rows[0]["id"]), key=lambda p: p["box"])
    assert first[0]["labels"]["color"] == "red" and first[0]["labels"]["view"] == "front"
    assert first[1]["labels"]["body_type"] == "van" and first[1]["attributes"]["body_type"] == "van"
    other = next(p for p in vehicles if p["frame_id"] == rows[1]["id"])
    assert other["labels"] == {"color": "green"} and other["attributes"]["view"] == "unknown"
    # a frame with no vehicle stays one frame pair
    empty = next(p for p in pairs if p["id"] == rows[7]["id"])
    assert empty["caption"] == "An empty road at night." and "frame_id" not in empty


def test_curate_vehicles_nothing_lost(tmp_path):
    rows = make_image_set(tmp_path, 3, size=96)
    answers = {
        rows[0]["id"]: "I cannot see any vehicles.",
        rows[1]["id"]: json.dumps({"caption": "A road.", "vehicles": [{"box": [1, 1, 3, 3], "class": "car"}]}),
        rows[2]["id"]: json.dumps({"caption": "Nothing here.", "vehicles": []}),
    }
    inputs, outputs = _vehicles_run(tmp_path, answers)
    cfg = CURATE.model_copy(update={"require_fields": ["color"]})
    by_split, rejects = curate(inputs, outputs, {r["id"]: r for r in rows}, tmp_path, cfg, 0)
    why = {r["id"]: r["reason"] for r in rejects}
    assert sum(len(v) for v in by_split.values()) == 0 and len(rejects) == 3
    assert "no JSON object" in why[rows[0]["id"]]
    assert (
        why[rows[1]["id"]].startswith("bad vehicle: vehicle 1 box [1, 1, 3, 3]: ") and "smaller" in why[rows[1]["id"]]
    )
    assert why[rows[2]["id"]] == "caption lacks color"


def test_auto_asks_for_vehicles_only_in_frames_known_to_hold_them(tmp_path):
    """caption.vehicles: auto (the default): a frame with boxes in the manifest gets the vehicles
    prompt, a single-car image today's one-caption prompt, in the same request file."""
    root = tmp_path / "repo"
    framed = _annotated(root, 2)
    plain = [{**r, "id": f"p{i}", "boxes": None} for i, r in enumerate(framed)]
    batch.make_requests(framed + plain, root, root / "jsonl", caption_cfg())
    asked = {r["recordId"]: formats.wants_vehicles(r["modelInput"]) for r in _records(root / "jsonl")}
    assert asked == {**{r["id"]: True for r in framed}, **{r["id"]: False for r in plain}}

"""Number plates as labels along the captioning path: every backend's prompt asks for the plate
(null where unreadable), the parsers check it (a bad plate is dropped with its reason, the rest of
the caption or vehicle kept), labels.csv and COCO attributes accept `plate`, the offline captioner
restates a plate where the render says it is legible, and curate carries it into the pairs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from carsearch.captioning import formats, offline, openai_compat
from carsearch.captioning import requests as batch
from carsearch.captioning.parse import parse_caption
from carsearch.captioning.vehicles import parse_vehicle_answer
from carsearch.core.vocab import BODY_TYPES, COLORS, VIEWS, plate_value
from carsearch.curation.curate import curate
from carsearch.sources import boxes
from carsearch.sources.labels import read_labels_csv
from carsearch_world import build_fleet, render_fleet
from conftest_bedrock import caption_cfg, make_image_set
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
CAPTION = {"make": "Acme", "model": "X", "body_type": "suv", "color": "red", "view": "rear"}
CAPTION_TEXT = "A red SUV seen from behind."


# ------------------------------------------------------------------ the plate check
@pytest.mark.parametrize(
    "raw,plate",
    [
        ("7abc-123", "7ABC-123"),  # US, lower-cased by the model
        ("AB-123-CD", "AB-123-CD"),  # EU
        (" ab12  cde ", "AB12 CDE"),  # UK, runs of whitespace as one space
        ("B-AB 1234", "B-AB 1234"),
        (1234567, "1234567"),  # an all-digit plate answered as a number
    ],
)
def test_plates_are_stored_upper_case_as_written(raw, plate):
    assert plate_value(raw) == (plate, None)


@pytest.mark.parametrize("raw", [None, "", "null", "unreadable", "Unknown", "N/A", "not visible"])
def test_no_plate_read_is_no_plate_and_no_problem(raw):
    assert plate_value(raw) == (None, None)


@pytest.mark.parametrize(
    "raw,msg",
    [
        ("AB$12", "plate 'AB$12' has characters other than A-Z, 0-9, space, hyphen or dot ('$')"),
        ("ÖB 123", "has characters other than A-Z"),
        ("A", "plate 'A': 1 letters and digits (a plate has 2 to 10)"),
        ("ABCDEFGHJK12", ": 12 letters and digits"),
        ("AB--12", "plate 'AB--12': a separator must stand between two letters or digits"),
        ("-AB12", "a separator must stand between"),
        (["AB", "12"], "plate ['AB', '12'] is not a string"),
        (True, "plate True is not a string"),
    ],
)
def test_what_is_not_a_plate_says_why(raw, msg):
    plate, why = plate_value(raw)
    assert plate is None and why is not None
    assert msg in why, why


# ------------------------------------------------------------------ the prompts, per backend
def _records(jsonl):
    return [json.loads(x) for f in sorted(jsonl.glob("*.jsonl")) for x in f.read_text().splitlines()]


def _asks_for_plates(text: str) -> bool:
    return '"plate"' in text and "null where no plate is visible or it cannot be read" in text


def test_the_caption_prompt_asks_for_the_plate_and_the_whole_vocabulary():
    cfg = caption_cfg()
    prompt = cfg.system_prompt
    assert _asks_for_plates(prompt)
    assert all(v in prompt for v in (*BODY_TYPES, *COLORS, *VIEWS)), "the prompt lists every value of the vocabulary"
    assert "vehicle" in cfg.user_prompt


def test_claude_body_asks_for_plates_in_its_system_and_user_blocks(tmp_path):
    rows = make_image_set(tmp_path, 2, size=96)
    rows[1]["boxes"] = [{"x1": 4, "y1": 4, "x2": 60, "y2": 60, "class": "car", "labels": {}}]
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", caption_cfg())
    single, frame = _records(tmp_path / "jsonl")
    for rec in (single, frame):
        formats.validate_record(rec, "claude")
    assert _asks_for_plates(single["modelInput"]["system"])  # Claude: `system` is a top-level string
    text = frame["modelInput"]["messages"][0]["content"][1]
    assert text["type"] == "text" and _asks_for_plates(text["text"]) and '"plate": "..." or null' in text["text"]


def test_nova_body_asks_for_plates_in_its_system_list_and_user_text(tmp_path):
    rows = make_image_set(tmp_path, 2, size=96)
    rows[1]["boxes"] = [{"x1": 4, "y1": 4, "x2": 60, "y2": 60, "class": "car", "labels": {}}]
    batch.make_requests(
        rows, tmp_path, tmp_path / "jsonl", caption_cfg(model_id="amazon.nova-lite-v1:0"), bucket="my-bucket"
    )
    single, frame = _records(tmp_path / "jsonl")
    for rec in (single, frame):
        formats.validate_record(rec, "nova")
    assert _asks_for_plates(single["modelInput"]["system"][0]["text"])  # Nova: `system` is a list of text blocks
    image, text = frame["modelInput"]["messages"][0]["content"]
    assert "image" in image and _asks_for_plates(text["text"])


def test_chat_completions_body_asks_for_plates_in_its_system_message_and_user_part(tmp_path):
    rows = make_image_set(tmp_path, 2, size=96)
    rows[1]["boxes"] = [{"x1": 4, "y1": 4, "x2": 60, "y2": 60, "class": "car", "labels": {}}]
    batch.make_requests(rows, tmp_path, tmp_path / "jsonl", caption_cfg(model_id="local-vlm", family="claude"))
    single, frame = (openai_compat.chat_request(r, "qwen2.5-vl") for r in _records(tmp_path / "jsonl"))
    assert single["messages"][0]["role"] == "system" and _asks_for_plates(single["messages"][0]["content"])
    _, text = frame["messages"][1]["content"]
    assert frame["messages"][1]["role"] == "user" and _asks_for_plates(text["text"])


# ------------------------------------------------------------------ the parsers
def test_a_caption_keeps_a_good_plate_and_drops_a_bad_one_with_its_reason():
    cap = parse_caption(json.dumps({**CAPTION, "plate": "7abc-123", "caption": CAPTION_TEXT}))
    assert cap.plate == "7ABC-123" and cap.plate_dropped is None
    cap = parse_caption(json.dumps({**CAPTION, "plate": "7ABC#123", "caption": CAPTION_TEXT}))
    assert cap.plate is None and "has characters other than A-Z" in cap.plate_dropped
    assert (cap.body_type, cap.color, cap.caption) == ("suv", "red", CAPTION_TEXT)  # the rest is kept
    cap = parse_caption(json.dumps({**CAPTION, "caption": CAPTION_TEXT}))  # an answer without the field
    assert cap.plate is None and cap.plate_dropped is None


def test_a_vehicle_keeps_a_good_plate_as_a_label_and_loses_only_a_bad_plate():
    v = {"class": "car", "color": "white", "caption": "A white car in the lane."}
    answer = {
        "caption": "Three cars.",
        "vehicles": [
            {**v, "box": [10, 10, 100, 100], "plate": "ab12 cde"},
            {**v, "box": [150, 10, 250, 100], "plate": "AB12_CDE"},
            {**v, "box": [10, 120, 100, 230], "plate": None},
        ],
    }
    ans = parse_vehicle_answer(json.dumps(answer), 320, 240, 16)
    assert ans.rejected == [] and len(ans.boxes) == 3
    assert [b["labels"].get("plate") for b in ans.boxes] == ["AB12 CDE", None, None]
    assert ans.boxes[1]["labels"] == {"color": "white"} and ans.boxes[1]["caption"] == v["caption"]
    (why,) = ans.plates_dropped
    assert why.startswith("vehicle 2 box [150, 10, 250, 100]: plate 'AB12_CDE' has characters other than")
    assert why.endswith("plate dropped, vehicle kept")


# ------------------------------------------------------------------ labels.csv and COCO
def test_labels_csv_accepts_a_plate_column_and_reports_a_bad_plate_by_row():
    text = "file,color,plate\na.jpg,red,7abc-123\nb.jpg,blue,7ABC/123\nc.jpg,white,\n"
    table = read_labels_csv(text.encode(), "in/labels.csv")
    assert table.rows["a.jpg"] == {"color": "red", "plate": "7ABC-123"}
    assert table.rows["b.jpg"] == {"color": "blue"} and table.rows["c.jpg"] == {"color": "white"}
    (problem,) = table.problems
    assert problem[0] == "in/labels.csv"
    assert problem[1].startswith("labels.csv row 3: plate '7ABC/123' has characters other than") and problem[
        1
    ].endswith("; label not used")


def test_labels_csv_box_rows_carry_the_plate_of_each_vehicle():
    text = "file,x1,y1,x2,y2,class,plate\nf.jpg,1,2,30,40,car,AB-123-CD\nf.jpg,50,2,90,40,bus,A\n"
    table = read_labels_csv(text.encode(), "labels.csv")
    a, b = table.boxes["f.jpg"]
    assert a["labels"] == {"plate": "AB-123-CD"} and b["labels"] == {} and b["class"] == "bus"
    assert table.problems == [
        ("labels.csv", "labels.csv row 3: plate 'A': 1 letters and digits (a plate has 2 to 10); label not used")
    ]


def test_coco_attributes_accept_a_plate_and_a_bad_one_costs_only_that_label(tmp_path):
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 320, "height": 180}],
        "categories": [{"id": 3, "name": "car"}],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [1, 1, 50, 50], "attributes": {"plate": "7abc-123"}},
            {"id": 12, "image_id": 1, "category_id": 3, "bbox": [60, 1, 50, 50], "attributes": {"plate": 4402117}},
            {
                "id": 13,
                "image_id": 1,
                "category_id": 3,
                "bbox": [120, 1, 50, 50],
                "attributes": {"color": "red", "plate": "7ABC-123-XYZ-99"},
            },
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(doc))
    got, problems = boxes.read_coco(tmp_path / "ann.json", "ann.json")
    assert [b["labels"] for b in got["a.jpg"]] == [{"plate": "7ABC-123"}, {"plate": "4402117"}, {"color": "red"}]
    assert problems == [
        (
            "ann.json",
            "ann.json annotations[2] (a.jpg): plate '7ABC-123-XYZ-99': 12 letters and digits (a plate has 2 to 10); "
            "label not used, box kept",
        )
    ]


# ------------------------------------------------------------------ the offline captioner
def test_offline_caption_restates_a_plate_only_where_it_is_legible():
    lab = {**CAPTION, "plate": "7ABC-123"}
    assert offline.offline_caption({**lab, "plate_legible": True}, "r")["plate"] == "7ABC-123"
    assert offline.offline_caption({**lab, "plate_legible": False}, "r")["plate"] is None
    assert offline.offline_caption(lab, "r")["plate"] == "7ABC-123"  # a plate label of a user's own: legible
    assert offline.offline_caption(CAPTION, "r")["plate"] is None  # TORCS, demo: no plate
    boxes_ = [
        {"x1": 4, "y1": 4, "x2": 40, "y2": 40, "class": "car", "labels": {"plate": "AB12 CDE", "plate_legible": True}},
        {
            "x1": 50,
            "y1": 4,
            "x2": 90,
            "y2": 40,
            "class": "car",
            "labels": {"plate": "AB13 CDE", "plate_legible": False},
        },
    ]
    ans = offline.offline_vehicles({"color": "red"}, {"width": 96, "height": 96, "boxes": boxes_}, "f")
    assert [v["plate"] for v in ans["vehicles"]] == ["AB12 CDE", None]


def test_offline_captions_of_street_renders_read_the_legible_plates(tmp_path):
    """Rendered close-ups: the captioner's plate is the identity's where the render says the plate
    is legible, null where not; both kinds occur."""
    fleet = build_fleet(3, 12, {"sedan": 1.0, "van": 1.0}, {"white": 1.0, "red": 1.0}, variants=1)
    items = render_fleet(fleet, tmp_path, 8, size=224, seed=3, workers=1)
    legible = []
    for k, (_, lab) in enumerate(items):
        cap = parse_caption(json.dumps(offline.offline_caption(lab, f"r{k}")))
        assert cap.plate == (lab["plate"] if lab["plate_legible"] else None)
        legible.append(lab["plate_legible"])
    assert any(legible) and not all(legible)


# ------------------------------------------------------------------ curate: plates into the pairs
def _run(tmp_path, body, answers: dict[str, str]):
    inp = tmp_path / "part-00000.jsonl"
    inp.write_text("".join(json.dumps({"recordId": rid, "modelInput": body}) + "\n" for rid in answers))
    out = tmp_path / "part-00000.jsonl.out"
    out.write_text(
        "".join(
            json.dumps(formats.output_record(rid, body, model_output=formats.claude_response(t, MID, 5, 5))) + "\n"
            for rid, t in answers.items()
        )
    )
    return [inp], [out]


def _png():
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_curate_carries_plates_into_pairs_and_reports_a_dropped_plate(tmp_path):
    rows = make_image_set(tmp_path, 3, size=96)
    for r in rows:
        r["labels"] = None  # the model's word is all there is
    plates = ["7abc-123", "7ABC#123", None]
    answers = {r["id"]: json.dumps({**CAPTION, "plate": p, "caption": CAPTION_TEXT}) for r, p in zip(rows, plates)}
    body = formats.claude_request(_png(), "s", "Describe the main vehicle in this image as the JSON object.")
    by_split, rejects = curate(*_run(tmp_path, body, answers), {r["id"]: r for r in rows}, tmp_path, CURATE, 0)
    pairs = {p["id"]: p for ps in by_split.values() for p in ps}
    assert len(pairs) == 3  # a bad plate never costs the pair
    good, bad, none = (pairs[r["id"]] for r in rows)
    assert good["attributes"]["plate"] == "7ABC-123" and good["labels"]["plate"] == "7ABC-123"
    assert "plate" not in bad["attributes"] and "plate" not in bad["labels"] and bad["labels"]["color"] == "red"
    assert "plate" not in none["attributes"]
    (rej,) = rejects
    assert rej["id"] == rows[1]["id"] and rej["path"] == rows[1]["path"]
    assert rej["reason"].startswith("bad plate: plate '7ABC#123' has characters other than")
    assert rej["reason"].endswith("plate dropped, caption kept")


def test_curate_vehicle_pairs_take_the_plate_the_source_labels_else_the_models(tmp_path):
    rows = make_image_set(tmp_path, 2, size=96)
    truth = {"x1": 4.0, "y1": 8.0, "x2": 44.0, "y2": 60.0, "class": "car", "labels": {"plate": "AB12 CDE"}}
    rows[0]["boxes"] = [{**truth, "score": None, "source": "render"}]
    rows[1]["labels"] = None
    v = {"class": "car", "color": "green", "caption": "A green car in the lane."}
    answers = {
        r["id"]: json.dumps(
            {
                "caption": "Two cars.",
                "vehicles": [
                    {**v, "box": [4, 8, 44, 60], "plate": "AB12 CDF"},
                    {**v, "box": [50, 30, 90, 90], "plate": "??"},
                ],
            }
        )  # fmt: skip
        for r in rows
    }
    body = formats.claude_request(_png(), "s", formats.vehicles_prompt(96, 96))
    by_split, rejects = curate(*_run(tmp_path, body, answers), {r["id"]: r for r in rows}, tmp_path, CURATE, 0)
    vehicles = sorted(
        (p for ps in by_split.values() for p in ps), key=lambda p: (p["frame_id"] != rows[0]["id"], p["box"])
    )
    assert len(vehicles) == 4
    assert vehicles[0]["labels"]["plate"] == "AB12 CDE"  # the renderer's plate wins over the model's reading
    assert vehicles[0]["attributes"]["plate"] == "AB12 CDF"  # what the model said stays its attribute
    assert vehicles[2]["labels"]["plate"] == "AB12 CDF"  # no source labels: the model's plate is the label
    assert all("plate" not in p["attributes"] for p in (vehicles[1], vehicles[3]))
    assert len(rejects) == 2 and all(
        r["reason"].startswith("bad plate: vehicle 2 box [50, 30, 90, 90]: plate '??'") for r in rejects
    )
    assert np.unique([r["id"] for r in rejects]).tolist() == sorted(r["id"] for r in rows)

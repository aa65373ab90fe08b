"""Parsing what the model answered into a validated caption."""

from __future__ import annotations

import pytest

from carsearch.captioning.offline import offline_caption
from carsearch.captioning.parse import CaptionError, parse_caption

LABELS = {"body_type": "pickup truck", "color": "gray", "view": "back", "make": "Acme", "model": "X"}


def test_fenced_and_prose_wrapped_json_is_parsed_and_normalised():
    text = 'Sure!\n```json\n{"make": "Acme", "model": "X", "body_type": "Pickup Truck", "color": "Gray", "view": "back", "caption": "A grey pickup from behind."}\n```'
    cap = parse_caption(text)
    assert (cap.body_type, cap.color, cap.view) == ("pickup", "grey", "rear")


@pytest.mark.parametrize(
    "text,msg",
    [
        ("", "empty answer"),
        ("I'm sorry, I can't help with that.", "no JSON object"),
        (
            '{"make": "Acme", "model": "X", "body_type": "suv", "color": "red", "view": "front", "caption": "A red SUV',
            "no JSON object",
        ),
        ('{"make": "Acme", "model": "X", body_type: suv}', "not valid JSON"),
        ('{"make": "Acme", "model": "X", "body_type": "suv", "color": "red", "view": "front"}', "field 'caption'"),
        (
            '{"make": "Acme", "model": "X", "body_type": "suv", "color": "red", "view": "front", "caption": "short"}',
            "field 'caption'",
        ),
    ],
)
def test_bad_answers_say_why(text, msg):
    with pytest.raises(CaptionError, match=msg):
        parse_caption(text)


def test_offline_caption_is_deterministic_and_valid():
    a, b = offline_caption(LABELS, "r1"), offline_caption(LABELS, "r1")
    assert a == b and parse_caption(__import__("json").dumps(a)).caption

"""Camera id and capture time of a frame: filename patterns, EXIF written by Pillow, labels.csv rows,
the precedence between them, and the `--after`/`--before` and display helpers."""

from __future__ import annotations

import io
import re
from datetime import datetime, timezone

import pytest
from PIL import ExifTags, Image

from carsearch.sources.capture import (
    capture_info,
    from_exif,
    from_labels,
    from_path,
    hour_bucket,
    iso,
    parse_pattern,
    parse_when,
)


def ts(*args, tz=timezone.utc) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


T0 = ts(2026, 1, 2, 10, 0, 5)


def jpeg(make=None, model=None, when=None, offset=None, serial=None, plain_datetime=None) -> bytes:
    exif = Image.Exif()
    if make:
        exif[0x010F] = make
    if model:
        exif[0x0110] = model
    if plain_datetime:
        exif[0x0132] = plain_datetime
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    if when:
        sub[0x9003] = when
    if offset:
        sub[0x9011] = offset
    if serial:
        sub[0xA431] = serial
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "JPEG", exif=exif)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ patterns
@pytest.mark.parametrize(
    "pattern, path, camera, t",
    [
        ("{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg", "cam-07/20260102_100005.jpg", "cam-07", T0),
        ("{camera}_{datetime:%Y-%m-%dT%H-%M-%S}.{ext}", "north_gate_2026-01-02T10-00-05.png", "north_gate", T0),
        ("{camera}/{*}/{date:%Y-%m-%d}/{time:%H%M%S}{*}.jpg", "A4/lane 2/2026-01-02/100005_007.jpg", "A4", T0),
        ("{camera}/{date:%Y-%m-%d}.jpg", "A4/2026-01-02.jpg", "A4", ts(2026, 1, 2)),
        ("{camera}-{epoch}.jpg", "c1-1767348005.jpg", "c1", T0),
        ("{camera}-{epoch_ms}.jpg", "c1-1767348005250.jpg", "c1", T0 + 0.25),
        ("{datetime:%Y%m%d%H%M%S%z}.jpg", "20260102110005+0100.jpg", None, T0),  # offset in the name wins over tz
        ("{{{camera}}}.jpg", "{x}.jpg", "x", None),  # doubled braces are literal
    ],
)
def test_pattern_reads_camera_and_time(pattern, path, camera, t):
    assert from_path(path, pattern) == {"camera": camera, "time": t}


def test_pattern_literals_are_exact_and_wildcards_stay_in_one_folder():
    p = "{camera}/{*}/{date:%Y%m%d}.jpg"
    assert from_path("cam/x/20260102.jpg", p)["camera"] == "cam"
    assert from_path("cam/x/y/20260102.jpg", p) == {"camera": None, "time": None}  # {*} does not cross '/'
    assert from_path("cam/x/20260102.jpeg", p)["camera"] is None  # '.jpg' literal, not a regex
    assert from_path("cam.x/20260102.jpg", "{camera}.x/{date:%Y%m%d}.jpg")["camera"] == "cam"
    assert from_path("camAx/20260102.jpg", "{camera}.x/{date:%Y%m%d}.jpg")["camera"] is None  # '.' is escaped
    assert from_path("cam\\x\\20260102.jpg", p)["camera"] == "cam"  # Windows separators


def test_pattern_time_read_in_the_given_zone():
    t = from_path("c/20260102_100005.jpg", "{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg", tz="Europe/Berlin")["time"]
    assert t == T0 - 3600


def test_non_matching_path_gives_nones_not_an_error():
    p = "{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg"
    assert from_path("loose.jpg", p) == {"camera": None, "time": None}
    assert from_path("cam/2026-01-02_100005.jpg", p) == {"camera": None, "time": None}
    assert from_path("cam/20261302_100005.jpg", p) == {"camera": "cam", "time": None}  # month 13: camera still read
    assert from_path("anything.jpg", None) == {"camera": None, "time": None}


@pytest.mark.parametrize(
    "pattern, problem",
    [
        ("{cam}/{date:%Y%m%d}.jpg", "unknown field {cam}"),
        ("{camera}/{date:%Y%m%Q}.jpg", "unsupported strptime directive '%Q'"),
        ("{camera}/{date}.jpg", "{date} needs a strptime format"),
        ("{camera}/{time:%H%M}.jpg", "{time} needs a {date} field"),
        ("{camera}/{camera}.jpg", "{camera} appears twice"),
        ("{camera}/{epoch}_{date:%Y%m%d}.jpg", "more than one time field"),
        ("{camera/x.jpg", "unmatched '{'"),
        ("{camera:%Y}.jpg", "{camera} takes no format"),
        ("{*}.{ext}", "neither {camera} nor a time field"),
        ("", "neither {camera} nor a time field"),
    ],
)
def test_bad_pattern_is_one_line_naming_the_key(pattern, problem):
    with pytest.raises(ValueError) as e:
        parse_pattern(pattern)
    msg = str(e.value)
    assert msg.startswith("data.capture.pattern = ") and problem in msg and "\n" not in msg
    with pytest.raises(ValueError, match=re.escape(problem)):
        capture_info("x.jpg", pattern=pattern) if pattern else parse_pattern(pattern)  # "" in capture_info: no pattern


# ---------------------------------------------------------------------------------------------- EXIF
def test_exif_with_offset():
    data = jpeg("Canon", "Canon EOS 5D", "2026:01:02 11:00:05", "+01:00", serial="123456")
    assert from_exif(data, tz="America/New_York") == {"camera": "Canon EOS 5D #123456", "time": T0}


def test_exif_without_offset_is_read_in_tz():
    data = jpeg("Axis", "Q1615", "2026:01:02 10:00:05")
    assert from_exif(data) == {"camera": "Axis Q1615", "time": T0}
    assert from_exif(data, tz="Europe/Berlin")["time"] == T0 - 3600
    assert from_exif(Image.open(io.BytesIO(data)), tz="Asia/Kolkata")["time"] == T0 - 5.5 * 3600


def test_exif_falls_back_to_datetime_and_omits_missing_camera_parts():
    assert from_exif(jpeg(model="Q1615", plain_datetime="2026:01:02 10:00:05")) == {"camera": "Q1615", "time": T0}
    assert from_exif(jpeg(make="Axis")) == {"camera": "Axis", "time": None}


@pytest.mark.parametrize(
    "data",
    [jpeg(), jpeg(when="    :  :     :  :  "), jpeg(when="garbage"), b"not an image", b"", None, jpeg()[:40]],
)
def test_bad_or_absent_exif_gives_nones(data):
    assert from_exif(data) == {"camera": None, "time": None}


@pytest.mark.parametrize(
    "call",
    [
        lambda tz: from_exif(jpeg(), tz=tz),
        lambda tz: from_exif(None, tz=tz),
        lambda tz: from_path("c/20260102.jpg", "{camera}/{date:%Y%m%d}.jpg", tz=tz),
        lambda tz: from_path("no-match", "{camera}/{date:%Y%m%d}.jpg", tz=tz),
        lambda tz: from_labels({"time": "2026-01-02T10:00"}, tz=tz),
        lambda tz: capture_info("x.jpg", tz=tz),
        lambda tz: parse_when("2026-01-02", tz=tz),
        lambda tz: iso(0.0, tz=tz),
    ],
)
def test_bad_time_zone_is_a_clear_error_not_a_missing_time(call):
    for tz in ("Mars/Olympus", "", "../etc/passwd"):
        with pytest.raises(ValueError, match=f"unknown time zone {tz!r}"):
            call(tz)


# ---------------------------------------------------------------------------------- labels, precedence
@pytest.mark.parametrize(
    "row, camera, t",
    [
        ({"camera": "c9", "time": "2026-01-02T10:00:05Z"}, "c9", T0),
        ({"Camera ": " c9 ", "timestamp": "2026-01-02T11:00:05+01:00"}, "c9", T0),
        ({"datetime": "2026-01-02 10:00:05"}, None, T0),
        ({"time": "1767348005"}, None, T0),
        ({"time": 1767348005.5}, None, T0 + 0.5),
        ({"camera": "", "time": "soon"}, None, None),
        ({"time": "", "timestamp": "1767348005"}, None, T0),
        (None, None, None),
    ],
)
def test_labels(row, camera, t):
    assert from_labels(row) == {"camera": camera, "time": t}


def test_labels_without_offset_use_tz():
    assert from_labels({"time": "2026-01-02T10:00:05"}, tz="Europe/Berlin")["time"] == T0 - 3600


def test_precedence_labels_over_pattern_over_exif_per_field():
    pattern = "{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg"
    data = jpeg("Axis", "Q1615", "2025:06:01 08:00:00")
    path = "cam-07/20260102_100005.jpg"
    both = capture_info(path, data, {"camera": "lbl", "time": "2024-01-01T00:00Z"}, pattern)
    assert both == {"camera": "lbl", "time": ts(2024, 1, 1), "time_source": "labels", "camera_source": "labels"}
    mixed = capture_info(path, data, {"camera": "lbl"}, pattern)
    assert mixed == {"camera": "lbl", "time": T0, "time_source": "pattern", "camera_source": "labels"}
    exif = capture_info("loose.jpg", data, {"time": ""}, pattern)
    assert exif == {"camera": "Axis Q1615", "time": ts(2025, 6, 1, 8), "time_source": "exif", "camera_source": "exif"}
    assert capture_info("cam/x.jpg", data, None, "{camera}/{*}.jpg")["time_source"] == "exif"
    none = capture_info("loose.jpg")
    assert none == {"camera": None, "time": None, "time_source": None, "camera_source": None}


# ------------------------------------------------------------------------------- --after/--before, display
@pytest.mark.parametrize(
    "text, t",
    [
        ("2026-01-02", ts(2026, 1, 2)),
        ("2026-01-02T10:00", ts(2026, 1, 2, 10)),
        ("2026-01-02T10:00:05", T0),
        ("2026-01-02T10:00:05Z", T0),
        ("2026-01-02T11:00+01:00", ts(2026, 1, 2, 10)),
        ("2026-01-02 10:00", ts(2026, 1, 2, 10)),
        (" 1767348005 ", T0),
        ("1767348005.5", T0 + 0.5),
    ],
)
def test_parse_when_forms(text, t):
    assert parse_when(text) == t


def test_parse_when_applies_tz_only_without_offset():
    assert parse_when("2026-01-02", tz="Europe/Berlin") == ts(2026, 1, 1, 23)
    assert parse_when("2026-01-02T10:00Z", tz="Europe/Berlin") == ts(2026, 1, 2, 10)


@pytest.mark.parametrize("text", ["yesterday", "", "2026-13-01", "02/01/2026", "nan", "10:00"])
def test_parse_when_errors_are_one_line(text):
    with pytest.raises(ValueError) as e:
        parse_when(text, option="--after")
    assert str(e.value) == f"--after: cannot read {text!r} as a time (e.g. 2026-01-02T10:00 or 2026-01-02)"


def test_iso_and_hour_bucket():
    assert iso(T0) == "2026-01-02T10:00:05+00:00"
    assert iso(T0, tz="Europe/Berlin") == "2026-01-02T11:00:05+01:00"
    assert iso(None) is None
    assert hour_bucket(T0) == "2026-01-02T10:00"
    assert hour_bucket(T0 + 3594) == "2026-01-02T10:00" and hour_bucket(T0 + 3595) == "2026-01-02T11:00"
    assert hour_bucket(ts(2026, 1, 1, 23, 30), tz="Europe/Berlin") == "2026-01-02T00:00"

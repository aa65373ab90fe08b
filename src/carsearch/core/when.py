"""Times as users type and read them: unix seconds (UTC) from ISO 8601 text or seconds
(`parse_when`, `label_time`), back to ISO 8601 (`iso`) and hour buckets. Light on purpose
(standard library only): the query path imports it, and never PIL's EXIF code or PyAV."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carsearch.core.errors import CarsearchError

SECONDS = re.compile(r"-?\d{9,}(\.\d*)?|-?\d+\.\d*")  # 9+ digits: "20260102" is a date, not 1970


class CaptureError(CarsearchError, ValueError):
    """A bad capture pattern, time zone or `--after`/`--before` value, as one line."""


def zone(tz: str) -> tzinfo:
    """The time zone of an IANA name (UTC / Z: UTC); CaptureError naming it otherwise."""
    if tz.upper() in ("UTC", "Z"):
        return timezone.utc
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CaptureError(f"unknown time zone {tz!r} (an IANA name, e.g. UTC or Europe/Berlin)") from None


def stamp(dt: datetime, tz: str) -> float:
    """Unix seconds of `dt`; a naive `dt` is a wall-clock time in `tz`."""
    return (dt if dt.tzinfo else dt.replace(tzinfo=zone(tz))).timestamp()


def text_of(v) -> str:
    """A label or EXIF value as clean text ("" for None / NaN)."""
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    return str(v).replace("\x00", " ").strip() if v is not None and v == v else ""  # v != v: NaN (pandas)


def label_time(value, tz: str) -> float | None:
    """Unix seconds of a time value (seconds, or ISO 8601 text read in `tz` without an offset); None if unreadable."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    text = text_of(value)
    if SECONDS.fullmatch(text):
        return float(text)
    try:
        return stamp(datetime.fromisoformat(text), tz)
    except (ValueError, OverflowError):
        return None


def parse_when(text: str, tz: str = "UTC", option: str = "time") -> float:
    """Unix seconds of an `--after`/`--before` value: 2026-01-02 (midnight in `tz`), 2026-01-02T10:00[:ss][Z|+01:00],
    2026-01-02 10:00, or unix seconds. Raises CaptureError (ValueError) naming `option` otherwise."""
    zone(tz)
    t = label_time(text.strip() if isinstance(text, str) else text, tz)
    if t is None:
        raise CaptureError(f"{option}: cannot read {text!r} as a time (e.g. 2026-01-02T10:00 or 2026-01-02)")
    return t


def iso(t: float | None, tz: str = "UTC") -> str | None:
    """ISO 8601 text of unix seconds in `tz`, e.g. 2026-01-02T10:00:00+00:00; None for None."""
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t, zone(tz)).isoformat(timespec="seconds")


def hour_bucket(t: float, tz: str = "UTC") -> str:
    """The hour `t` falls in, in `tz`, for per-hour histograms: "2026-01-02T10:00"."""
    return datetime.fromtimestamp(t, zone(tz)).strftime("%Y-%m-%dT%H:00")


FRAME_TAG = re.compile(r"#t=(?P<offset>\d+(?:\.\d+)?)s$")  # `<video path>#t=<offset>s`: a sampled frame


def split_frame_name(name: str) -> tuple[str, float | None]:
    """(the video's path, the frame's offset in seconds) of a sampled frame's name; (name, None) otherwise."""
    m = FRAME_TAG.search(str(name))
    return (str(name)[: m.start()], float(m["offset"])) if m else (str(name), None)

"""Camera id and capture time of a traffic-camera frame, so analysts can filter hits by camera and time range.

Sources, merged per field as labels.csv > filename pattern > EXIF (`capture_info`): `from_labels` (a row's
`camera` and `time`/`timestamp`/`datetime`: ISO 8601 or unix seconds); `from_path` (`data.capture.pattern`,
relative to the corpus root, e.g. `{camera}/{date:%Y%m%d}_{time:%H%M%S}.jpg`; fields {camera} {date:FMT}
{time:FMT} {datetime:FMT} {epoch} {epoch_ms} {ext} {*}, literal text exact, `{{`/`}}` literal braces);
`from_exif` (DateTimeOriginal else DateTime, OffsetTimeOriginal else OffsetTime, "Make Model #Serial").
A time without an offset is read in `tz` (IANA name); times are unix seconds (UTC). Unreadable data gives None;
a bad pattern, zone or `--after` value (`parse_when`) raises `CaptureError` (a ValueError), one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, tzinfo
from functools import lru_cache

from PIL import ExifTags, Image

from carsearch.core import imaging
from carsearch.core.when import (  # noqa: F401  (re-exported: the time helpers live in core, for the query path)
    SECONDS,
    CaptureError,
    hour_bucket,
    iso,
    label_time,
    parse_when,
    stamp,
    text_of,
    zone,
)

PATTERN_KEY = "data.capture.pattern"
# strptime directives a pattern may use, and what each matches in a file name
DIRECTIVES = {
    **dict.fromkeys("ymdHIMS", r"\d{2}"), "Y": r"\d{4}", "j": r"\d{3}", "f": r"\d{1,6}", "p": r"[AaPp][Mm]",
    **dict.fromkeys("ab", r"[A-Za-z]{3}"), **dict.fromkeys("AB", r"[A-Za-z]+"), "z": r"(?:Z|[+-]\d{2}:?\d{2})", "%": "%",
}  # fmt: skip
FIELDS = {"camera": r"[^/]+?", "ext": r"[A-Za-z0-9]+", "epoch": r"\d+", "epoch_ms": r"\d+", "*": r"[^/]*?"}
FORMAT_FIELDS = ("date", "time", "datetime")
TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
EXIF_DTO, EXIF_OTO, EXIF_OT, EXIF_DT = 0x9003, 0x9011, 0x9010, 0x0132
EXIF_MAKE, EXIF_MODEL, EXIF_SERIAL = 0x010F, 0x0110, 0xA431


@dataclass(frozen=True)
class CapturePattern:
    """A compiled `data.capture.pattern`: the regex and the strptime format of each time field."""

    pattern: str
    regex: re.Pattern
    formats: dict  # field name -> strptime format ("" for camera/epoch fields)


def _bad(pattern: str, problem: str) -> CaptureError:
    return CaptureError(f"{PATTERN_KEY} = {pattern!r}: {problem}")


def _format_regex(pattern: str, name: str, fmt: str) -> str:
    def one(m: re.Match) -> str:
        if m.group(0)[0] != "%":
            return re.escape(m.group(0))
        if m.group(0)[1:] not in DIRECTIVES:
            known = " ".join("%" + k for k in DIRECTIVES)
            raise _bad(pattern, f"{{{name}:{fmt}}}: unsupported strptime directive '{m.group(0)}' (use {known})")
        return DIRECTIVES[m.group(0)[1:]]

    return re.sub(r"%.?|[^%]", one, fmt, flags=re.DOTALL)


@lru_cache(maxsize=64)
def parse_pattern(pattern: str) -> CapturePattern:
    """Compile a capture pattern; raises CaptureError (ValueError) naming `data.capture.pattern` and the problem."""
    pattern = pattern.strip().removeprefix("./")
    parts, formats, pos = [], {}, 0
    for m in TOKEN.finditer(pattern):
        parts.append(re.escape(pattern[pos : m.start()]))
        pos = m.end()
        tok = m.group(0)
        if tok in ("{{", "}}"):
            parts.append(re.escape(tok[0]))
            continue
        if m.group(1) is None:
            raise _bad(pattern, f"unmatched '{tok}' at character {m.start() + 1} (write {tok}{tok} for a literal)")
        name, colon, fmt = m.group(1).strip().partition(":")
        if name not in FIELDS and name not in FORMAT_FIELDS:
            known = ", ".join("{" + f + "}" for f in ("camera", *FORMAT_FIELDS, "epoch", "epoch_ms", "ext", "*"))
            raise _bad(pattern, f"unknown field {{{m.group(1)}}} (known: {known})")
        if name in formats and name != "*":
            raise _bad(pattern, f"field {{{name}}} appears twice")
        if name in FORMAT_FIELDS:
            if not fmt:
                raise _bad(pattern, f"{{{name}}} needs a strptime format, e.g. {{{name}:%Y%m%d}}")
            parts.append(f"(?P<{name}>{_format_regex(pattern, name, fmt)})")
        elif colon:
            raise _bad(pattern, f"{{{name}}} takes no format (got {{{m.group(1)}}})")
        else:
            parts.append(FIELDS[name] if name == "*" else f"(?P<{name}>{FIELDS[name]})")
        formats[name] = fmt
    parts.append(re.escape(pattern[pos:]))
    clocks = [f for f in ("datetime", "date", "epoch", "epoch_ms") if f in formats]
    if len(clocks) > 1:
        raise _bad(pattern, f"more than one time field ({', '.join('{' + c + '}' for c in clocks)}); use one")
    if "time" in formats and "date" not in formats:
        raise _bad(pattern, "{time} needs a {date} field (a time of day alone is not a capture time)")
    if "camera" not in formats and not clocks:
        raise _bad(pattern, "gives neither {camera} nor a time field")
    return CapturePattern(pattern, re.compile("".join(parts), re.DOTALL), formats)


def from_path(rel_path: str, pattern: str | CapturePattern | None, tz: str = "UTC") -> dict:
    """{"camera", "time"} from a path relative to the corpus root; Nones when there is no pattern or no match."""
    zone(tz)  # a bad zone is a config error, whatever the path
    cp = parse_pattern(pattern) if isinstance(pattern, str) and pattern else pattern
    m = cp.regex.fullmatch(rel_path.replace("\\", "/").removeprefix("./")) if cp else None
    g, f, t = (m.groupdict() if m else {}), (cp.formats if cp else {}), None
    try:
        if "epoch" in g or "epoch_ms" in g:
            t = float(g["epoch"]) if "epoch" in g else int(g["epoch_ms"]) / 1000
        elif "datetime" in g:
            t = stamp(datetime.strptime(g["datetime"], f["datetime"]), tz)
        elif "date" in g:
            day = datetime.strptime(g["date"], f["date"]).date()
            clock = datetime.strptime(g["time"], f["time"]).timetz() if "time" in g else time()
            t = stamp(datetime.combine(day, clock), tz)
    except (ValueError, OverflowError):  # e.g. month 13: the name looked like a time but is not one
        t = None
    return {"camera": g.get("camera") or None, "time": t}


def _exif_offset(text: str) -> tzinfo | None:
    try:
        return datetime.strptime(text, "%z").tzinfo  # "+01:00", "+0100", "Z"
    except ValueError:
        return None


def _exif_time(text: str, offset: str, tz: str) -> float | None:
    try:  # "2026:01:02 10:00:05" (some writers use '-' in the date)
        dt = datetime.strptime(text[:19].replace("-", ":"), "%Y:%m:%d %H:%M:%S")
    except ValueError:
        return None
    return stamp(dt.replace(tzinfo=_exif_offset(offset)), tz)


def from_exif(data: bytes | Image.Image | None, tz: str = "UTC") -> dict:
    """{"camera", "time"} from an image's EXIF; Nones when it has none or it cannot be read (never raises on data)."""
    zone(tz)  # a bad zone is a config error: raise it before the data is judged
    if not isinstance(data, (Image.Image, bytes, bytearray, memoryview)):
        return {"camera": None, "time": None}
    try:
        exif = (data if isinstance(data, Image.Image) else imaging.open_image(data)).getexif()
        sub = exif.get_ifd(ExifTags.IFD.Exif)
        for when, offsets in ((sub.get(EXIF_DTO), (EXIF_OTO, EXIF_OT)), (exif.get(EXIF_DT), (EXIF_OT, EXIF_OTO))):
            offset = next((text_of(sub.get(k)) for k in offsets if text_of(sub.get(k))), "")
            if (t := _exif_time(text_of(when), offset, tz)) is not None:
                break
        make, model, serial = text_of(exif.get(EXIF_MAKE)), text_of(exif.get(EXIF_MODEL)), text_of(sub.get(EXIF_SERIAL))
        if make and model.lower().startswith(make.lower()):
            make = ""  # "Canon" + "Canon EOS 5D" -> "Canon EOS 5D"
        name = " ".join(p for p in (make, model, f"#{serial}" if serial else "") if p)
        return {"camera": name or None, "time": t}
    except Exception:  # any damaged or foreign EXIF block reads as "no EXIF"
        return {"camera": None, "time": None}


def from_labels(labels: dict | None, tz: str = "UTC") -> dict:
    """{"camera", "time"} from a labels.csv row (keys matched case-insensitively); an unreadable value is None."""
    zone(tz)  # a bad zone is a config error, whatever the row
    row = {str(k).strip().lower(): v for k, v in (labels or {}).items()}
    times = (label_time(row.get(k), tz) for k in ("time", "timestamp", "datetime"))
    return {"camera": text_of(row.get("camera")) or None, "time": next((t for t in times if t is not None), None)}


def capture_info(
    rel_path: str,
    data: bytes | Image.Image | None = None,
    labels: dict | None = None,
    pattern: str | CapturePattern | None = None,
    tz: str = "UTC",
) -> dict:
    """Camera and capture time of one image, each field from the first source that has it: labels > pattern > EXIF."""
    found = [("labels", from_labels(labels, tz)), ("pattern", from_path(rel_path, pattern, tz))]
    if any(all(got[f] is None for _, got in found) for f in ("camera", "time")):  # EXIF only when still needed
        found.append(("exif", from_exif(data, tz)))
    out = {"camera": None, "time": None, "time_source": None, "camera_source": None}
    for source, got in found:
        for field in ("camera", "time"):
            if out[field] is None and got[field] is not None:
                out[field], out[f"{field}_source"] = got[field], source
    return out

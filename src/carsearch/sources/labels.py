"""Labels for a folder (or S3 prefix) of images: the optional labels.csv and the sub-folder names.

labels.csv: UTF-8 with or without a BOM (Excel's "CSV UTF-8"), else read as cp1252 with a reported
warning; comma, semicolon, tab or `|` delimited (csv.Sniffer); header names matched case- and
whitespace-insensitively; a `file` (or `path`/`filename`/`image`) column relative to the folder;
`color`, `body_type` and `view` values normalised with the caption vocabulary's synonyms, `plate`
checked as a number plate (`vocab.plate_value`: upper-cased; a value that is not a plate is reported
and not used, the row's other labels kept). Row
numbers are the file's line numbers (the header is row 1, as a spreadsheet shows it).
Every problem is reported as a (path, reason) pair for the rejects file; nothing is dropped silently.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carsearch.core.vocab import BODY_TYPES, COLORS, SYNONYMS, VIEWS, plate_value

VOCAB = {"color": COLORS, "body_type": BODY_TYPES, "view": VIEWS}
FILE_COLUMNS = ("file", "path", "filename", "image")
BOX_COLUMNS = (("x1", "y1", "x2", "y2"), ("xmin", "ymin", "xmax", "ymax"))  # a row per vehicle box, in pixels


def check_value(key: str, value: str) -> tuple[str | None, str | None]:
    """(a label value as stored, None), (None, None) for a value that says nothing, or (None, why it
    is not a value of `key`): vocabulary keys lower-cased and mapped through the synonyms, `plate`
    as a number plate, other keys stripped."""
    value = " ".join(value.split())
    if key == "plate":
        return plate_value(value)
    if key not in VOCAB:
        return value or None, None
    v = value.lower().replace("_", " ")
    v = SYNONYMS.get(v, v)
    if v not in VOCAB[key]:
        v2 = v.replace(" ", "-")  # "three quarter" written as a folder name
        if v2 in VOCAB[key]:
            return v2, None
        return None, f"{key} {value!r} is not one of {', '.join(VOCAB[key])}"
    return v, None


def normalise_value(key: str, value: str) -> str | None:
    """A label value as stored (`check_value`), None when it is not a known value of `key`."""
    return check_value(key, value)[0]


def folder_label(rel: str, key: str | None) -> str | None:
    """The `key` label a file's folders give it: the nearest ancestor folder whose name is a known
    value of `key` (`red/2024/a.jpg` -> red); for a key without a vocabulary, the parent folder's name."""
    parents = rel.split("/")[:-1]
    if not key or not parents:
        return None
    if key not in VOCAB:
        return parents[-1].replace("_", " ").strip() or None
    for name in reversed(parents):
        v = normalise_value(key, name)
        if v is not None:
            return v
    return None


@dataclass
class LabelTable:
    rows: dict[str, dict] = field(default_factory=dict)  # rel path -> labels
    line: dict[str, int] = field(default_factory=dict)  # rel path -> its row number
    problems: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) for the rejects
    boxes: dict[str, list[dict]] = field(default_factory=dict)  # rel path -> boxes (box columns; one row per box)

    def missing(self, existing: set[str], folder: str, csv_name: str) -> list[tuple[str, str]]:
        """(path, reason) for every row naming a file that is not in `existing` (rel paths)."""
        return [
            (f"{folder}/{rel}", f"{csv_name} row {self.line[rel]} names a file that does not exist")
            for rel in sorted(self.line, key=self.line.get)
            if rel not in existing
        ]


def _decode(raw: bytes, name: str, table: LabelTable) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        bad = f"byte 0x{raw[e.start]:02x} at offset {e.start}"
    try:
        text, enc = raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        text, enc = raw.decode("latin-1"), "latin-1"
    table.problems.append((name, f"{Path(name).name} is not UTF-8 ({bad}); read as {enc}, check accented labels"))
    return text


def _dialect(text: str):
    try:
        return csv.Sniffer().sniff(text[:8192], delimiters=",;\t|")
    except csv.Error:
        return csv.excel


def read_labels_csv(raw: bytes, name: str) -> LabelTable:
    """Parse labels.csv bytes (`name`: its path, for messages). A file without a file column
    raises ValueError naming it; row-level problems go to `.problems`."""
    table = LabelTable()
    text = _decode(raw, name, table)
    csv_name = Path(name).name
    reader = csv.reader(text.splitlines(), _dialect(text))
    header = next(reader, None)
    if header is None:
        return table
    cols = [" ".join(h.split()).lower().replace(" ", "_").replace("-", "_") for h in header]
    key = next((k for k in FILE_COLUMNS if k in cols), None)
    if key is None:
        raise ValueError(f"{name}: needs a 'file' column naming each image (has {header})")
    first: dict[str, tuple[int, dict]] = {}
    conflicts: dict[str, list[int]] = {}
    box_cols = next((c for c in BOX_COLUMNS if set(c) <= set(cols)), None)
    for values in reader:
        n = reader.line_num
        if not any(v.strip() for v in values):
            continue
        row = dict(zip(cols, values))
        rel = row.pop(key, "").strip().replace("\\", "/")
        while rel.startswith("./"):
            rel = rel[2:]
        if not rel:
            table.problems.append((name, f"{csv_name} row {n} has no file name"))
            continue
        coords = [row.pop(c, "").strip() for c in box_cols] if box_cols else []
        cls = (row.pop("class", "") or "").strip() if box_cols else ""
        at = (row.pop("t", "") or "").strip() if box_cols else ""  # a video's frame: seconds from its start
        if any(coords):
            _box_row(table, name, csv_name, n, rel, coords, cls, row, at)
            continue
        labels = _row_labels(row, table, name, f"{csv_name} row {n}")
        if rel in first:
            conflicts.setdefault(rel, [first[rel][0]]).append(n)
            if labels != first[rel][1]:
                first[rel] = (first[rel][0], None)
            continue
        first[rel] = (n, labels)
    for rel, (n, labels) in first.items():
        if rel in conflicts:
            rows = ", ".join(map(str, conflicts[rel]))
            what = "with different labels; none used" if labels is None else "(identical; used once)"
            table.problems.append((name, f"{csv_name} rows {rows} all name {rel} {what}"))
        table.line[rel] = n
        if labels is not None:
            table.rows[rel] = labels
    return table


def _row_labels(row: dict, table: LabelTable, name: str, where: str) -> dict:
    """The labels of one labels.csv row; a value that is not one of its key's is reported, not used."""
    labels = {}
    for k, v in row.items():
        if not k or not v or not v.strip():
            continue
        norm, why = check_value(k, v)
        if why:
            table.problems.append((name, f"{where}: {why}; label not used"))
        elif norm is not None:
            labels[k] = norm
    return labels


def _box_row(
    table: LabelTable, name: str, csv_name: str, n: int, rel: str, coords: list[str], cls: str, row: dict, at: str = ""
):
    """A labels.csv row with box columns: one vehicle of `rel` (its other columns label the vehicle);
    with a `t` column, of the frame `t` seconds into the video `rel` (a sampled frame: `#t=<t>s`)."""
    table.line.setdefault(rel, n)
    try:
        x1, y1, x2, y2 = (float(v) for v in coords)
        if at:
            rel = f"{rel}#t={float(at):.3f}s"
    except ValueError:
        table.problems.append(
            (name, f"{csv_name} row {n}: box {coords} t {at!r} is not numbers (x1 y1 x2 y2 in px, t in s)")
        )
        return
    labels = _row_labels(row, table, name, f"{csv_name} row {n}")
    box = {"x1": x1, "y1": y1, "x2": x2, "y2": y2, "class": cls or "car", "score": None, "labels": labels}
    table.boxes.setdefault(rel, []).append(box)


def labels_for(rel: str, subfolder_key: str | None, table: LabelTable) -> dict | None:
    labels: dict = {}
    v = folder_label(rel, subfolder_key)
    if v is not None:
        labels[subfolder_key] = v
    labels.update(table.rows.get(rel, {}))
    return labels or None


def model_key(lab: dict) -> str | None:
    if lab.get("model_id"):
        return str(lab["model_id"])
    if lab.get("make") and lab.get("model") and "unknown" not in (lab["make"], lab["model"]):
        return f"{lab['make']} {lab['model']}"
    return None


def same_model_relevance(labels: list[dict]) -> np.ndarray:
    keys = np.array([model_key(lab) or f"\0{i}" for i, lab in enumerate(labels)], dtype=object)
    rel = keys[:, None] == keys[None, :]
    np.fill_diagonal(rel, False)
    return rel.astype(bool)

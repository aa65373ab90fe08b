"""Checking what a search is asked: the text query, and the `--where` filter on the index's
metadata columns. A filter is parsed by a small strict grammar (not passed through blindly), so
`color = 'blue' garbage` is refused with one line naming the bad token instead of running as
`color = 'blue'`. Structured filters (`--color red --view rear`) are turned into a where clause
with escaped literals.

Grammar (keywords case-insensitive):
    expr     := term (OR term)*
    term     := factor (AND factor)*
    factor   := NOT factor | '(' expr ')' | cond
    cond     := COLUMN op STRING | COLUMN [NOT] IN '(' STRING (',' STRING)* ')'
              | COLUMN [NOT] LIKE STRING | COLUMN IS [NOT] NULL
    op       := '=' | '!=' | '<>'
    STRING   := '...' (a quote inside doubled: 'o''brien')
"""

from __future__ import annotations

import re
from pathlib import Path

from carsearch.core.columns import ROW
from carsearch.core.errors import CarsearchError
from carsearch.core.when import parse_when

COLUMNS = ROW.where  # the columns a `--where` may name (carsearch.core.columns)
KEYWORDS = {"AND", "OR", "NOT", "IN", "LIKE", "IS", "NULL"}
MAX_QUERY_CHARS = 1000

_TOKEN = re.compile(
    r"""\s*(?:(?P<str>'(?:[^']|'')*')|(?P<op><>|!=|=)|(?P<punct>[(),])|(?P<word>[A-Za-z_][A-Za-z0-9_]*)
                        |(?P<bad>'[^']*$|\S+?(?=[\s(),=!<>']|$)|\S))""",
    re.X,
)


class QueryError(CarsearchError, ValueError):
    """A query or filter that cannot be run; one line."""


def check_text(query: str | None) -> str:
    """The query text, stripped; refused when empty or absurdly long."""
    if query is None or not str(query).strip():
        raise QueryError('empty text query: describe the car, e.g. "red suv seen from the front"')
    q = " ".join(str(query).split())
    if len(q) > MAX_QUERY_CHARS:
        raise QueryError(f"text query of {len(q)} characters: at most {MAX_QUERY_CHARS}")
    return q


def check_confidence(value) -> float | None:
    """`min_confidence`: None, or a probability in [0, 1] (only hits at least that confident)."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise QueryError(f"min_confidence: expected a probability between 0 and 1, got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise QueryError(f"min_confidence: expected a probability between 0 and 1, got {value!r}")
    return v


# Motion words of a text query ("white pickup heading north", "a van driving away"): a picture shows
# no motion, so each phrase is a filter on the track's motion columns (carsearch.detection.motion)
# instead of words the model embeds. One table: (pattern, column, value; None: the matched word).
_VERB = r"(?:(?:that|which)\s+(?:is|was)\s+|is\s+|was\s+)?(?:heading|going|driving|travell?ing|moving|riding)"
MOTION_WORDS: tuple[tuple[str, str, str | None], ...] = (
    (_VERB + r"\s+(?:due\s+)?(north|east|south|west)(?:wards?)?", "compass", None),
    (r"(north|east|south|west)(?:bound|wards?)", "compass", None),
    (_VERB + r"\s+(?:to\s+the\s+)?(left|right)", "direction", None),
    (
        _VERB
        + r"\s+towards?\s+(?:the\s+)?camera|(?:coming|driving)\s+towards?\s+(?:us|the\s+camera)|oncoming|approaching",
        "direction",
        "towards",
    ),  # fmt: skip
    (_VERB + r"\s+away(?:\s+from\s+(?:us|the\s+camera))?|receding", "direction", "away"),
    (
        r"(?:(?:that|which)\s+(?:is|was)\s+|is\s+)?(?:parked|stopped|stationary|standing\s+still)",
        "direction",
        "stopped",
    ),
)
_MOTION = [(re.compile(rf"\b(?:{pat})\b", re.I), col, value) for pat, col, value in MOTION_WORDS]


def motion_words(text: str, columns=None) -> tuple[str, dict[str, str], list[dict]]:
    """(the text without its motion phrases, {column: value}, [{"phrase", "column", "value"}]): the
    first phrase of each column counts (`columns`: only these); a text that is nothing but motion is
    kept whole to embed."""
    found, said, rest = {}, [], text
    for rx, col, value in _MOTION:
        m = rx.search(rest) if columns is None or col in columns else None
        if m is None or col in found:
            continue
        found[col] = value or m.group(1).lower()
        said.append({"phrase": m.group(0), "column": col, "value": found[col]})
        rest = rest[: m.start()] + " " + rest[m.end() :]
    rest = " ".join(rest.split()).strip(" ,;.-")
    rest = re.sub(r"\s+(?:and|,)$", "", rest, flags=re.I).strip()
    return (rest if re.search(r"\w", rest) else text), found, said


def _tokens(where: str) -> list[tuple[str, str, int]]:
    out, pos = [], 0
    while pos < len(where):
        if not where[pos:].strip():
            break
        m = _TOKEN.match(where, pos)
        kind = m.lastgroup
        text = m.group(kind)
        start = m.start(kind)
        if kind == "bad":
            what = "unterminated string" if text.startswith("'") else f"unexpected {text!r}"
            raise QueryError(f"--where: {what} at character {start + 1} of {where!r}")
        if kind == "word" and text.upper() in KEYWORDS:
            kind, text = "kw", text.upper()
        out.append((kind, text, start))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, where: str):
        self.where, self.toks, self.i = where, _tokens(where), 0

    def peek(self, kind: str | None = None, text: str | None = None) -> bool:
        if self.i >= len(self.toks):
            return False
        k, t, _ = self.toks[self.i]
        return (kind is None or k == kind) and (text is None or t == text)

    def fail(self, expected: str):
        if self.i >= len(self.toks):
            raise QueryError(f"--where: {self.where!r} ends early: expected {expected}")
        _, t, pos = self.toks[self.i]
        raise QueryError(f"--where: unexpected {t!r} at character {pos + 1} of {self.where!r}: expected {expected}")

    def take(self, kind: str, text: str | None = None, expected: str = "") -> str:
        if not self.peek(kind, text):
            self.fail(expected or text or kind)
        self.i += 1
        return self.toks[self.i - 1][1]

    def expr(self) -> None:
        self.term()
        while self.peek("kw", "OR"):
            self.i += 1
            self.term()

    def term(self) -> None:
        self.factor()
        while self.peek("kw", "AND"):
            self.i += 1
            self.factor()

    def factor(self) -> None:
        if self.peek("kw", "NOT"):
            self.i += 1
            return self.factor()
        if self.peek("punct", "("):
            self.i += 1
            self.expr()
            self.take("punct", ")", "')'")
            return None
        return self.cond()

    def cond(self) -> None:
        if not self.peek("word"):
            self.fail(f"a column ({', '.join(COLUMNS)})")
        col = self.toks[self.i][1]
        if col.lower() not in COLUMNS:
            _, _, pos = self.toks[self.i]
            raise QueryError(f"--where: unknown column {col!r} at character {pos + 1}: filter on {', '.join(COLUMNS)}")
        self.i += 1
        if self.peek("op"):
            self.i += 1
            self.take("str", expected="a quoted string such as 'red'")
        elif self.peek("kw", "IS"):
            self.i += 1
            if self.peek("kw", "NOT"):
                self.i += 1
            self.take("kw", "NULL", "NULL")
        else:
            if self.peek("kw", "NOT"):
                self.i += 1
            if self.peek("kw", "LIKE"):
                self.i += 1
                self.take("str", expected="a quoted pattern such as 'ford%'")
            elif self.peek("kw", "IN"):
                self.i += 1
                self.take("punct", "(", "'('")
                self.take("str", expected="a quoted string")
                while self.peek("punct", ","):
                    self.i += 1
                    self.take("str", expected="a quoted string")
                self.take("punct", ")", "')'")
            else:
                self.fail("=, !=, <>, IN, LIKE or IS")

    def parse(self) -> None:
        if not self.toks:
            raise QueryError("--where: empty filter")
        self.expr()
        if self.i < len(self.toks):
            self.fail("AND, OR or the end of the filter")


def check_where(where: str | None) -> str | None:
    """The filter unchanged if it parses (None / blank: no filter); QueryError naming the bad token otherwise."""
    if where is None:
        return None
    if not where.strip():
        raise QueryError("--where: empty filter")
    _Parser(where).parse()
    return where.strip()


def quote(value: str) -> str:
    """A SQL string literal."""
    return "'" + str(value).replace("'", "''") + "'"


def _range(key: str, v) -> str:
    col, op = ROW.ranges[key]
    v = v[0] if isinstance(v, (list, tuple)) and len(v) == 1 else v
    try:
        x = float(v)
    except (TypeError, ValueError):
        x = float("nan")
    if x != x or x in (float("inf"), float("-inf")) or isinstance(v, bool):
        raise QueryError(f"--{key.replace('_', '-')}: expected a number, got {v!r}")
    return f"{col} {op} {x!r}"


def build_where(filters: dict[str, str | list[str] | None], where: str | None = None) -> str | None:
    """`{"color": "red", "view": ["rear", "side"], "min_speed": 30}` (+ an optional checked where) -> one
    where clause (range filters: carsearch.core.columns `range`)."""
    parts = []
    for col, v in filters.items():
        if v is None or v == [] or v == ():
            continue
        if col in ROW.ranges:  # min_<col> / max_<col>: one number
            parts.append(_range(col, v))
            continue
        if col not in COLUMNS:
            raise QueryError(f"unknown filter column {col!r}: filter on {', '.join(COLUMNS)}")
        vals = [v] if isinstance(v, str) else list(v)
        for x in vals:
            if not str(x).strip():
                raise QueryError(f"--{col.replace('_', '-')}: empty value")
        parts.append(
            f"{col} = {quote(vals[0])}" if len(vals) == 1 else f"{col} IN ({', '.join(quote(x) for x in vals)})"
        )
    checked = check_where(where)
    if checked:
        parts.append(f"({checked})")
    return " AND ".join(parts) or None


def scope_where(camera: str | list[str] | None = None, after=None, before=None, tracks: bool = False) -> str | None:
    """The camera / time-range filter (`--camera`, `--after`, `--before`; times as unix seconds or
    text such as 2026-01-02T10:00, read by carsearch.core.when.parse_when) as a where clause.
    Rows without a capture time never match a time range; with `tracks` (a table with video tracks),
    a track matches when it was in view at any time in the range."""
    parts = []
    cams = [camera] if isinstance(camera, str) else [c for c in (camera or []) if c]
    if cams:
        parts.append(build_where({"camera": cams}))
    for name, value, op in (("after", after, ">="), ("before", before, "<")):
        if value is None or value == "":
            continue
        try:
            t = float(value) if isinstance(value, (int, float)) else parse_when(str(value), option=f"--{name}")
        except ValueError as e:
            raise QueryError(str(e)) from None
        if tracks:
            parts.append(f"(time {op} {t!r} OR {'last_seen' if op == '>=' else 'first_seen'} {op} {t!r})")
        else:
            parts.append(f"time {op} {t!r}")
    return " AND ".join(parts) or None


def combine(*clauses: str | None) -> str | None:
    """Where clauses AND-ed (None where there is none)."""
    parts = [c for c in clauses if c]
    return parts[0] if len(parts) == 1 else " AND ".join(f"({c})" for c in parts) or None


def check_image(path, max_pixels: int | None = None) -> Path:
    """The query image's path if it exists and decodes (any format the index reads: HEIC too) and
    is within `max_pixels` (`data.max_pixels` where the caller has the config; None: no limit);
    QueryError `PATH: not an image (...)` / `PATH: corrupt or truncated image (...)` otherwise."""
    from carsearch.core import imaging  # the image reader (PIL, pillow-heif) only for an image query

    p = Path(path)
    if not p.is_file():
        raise QueryError(f"{path}: no such image file")
    try:
        imaging.check(p, max_pixels)
    except imaging.ImageError as e:
        raise QueryError(f"{path}: {e}") from None
    return p

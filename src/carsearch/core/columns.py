"""The index row, declared once: every column of the search table with its Arrow type and its facts
(who fills it, whether users filter, facet and see it, whether it goes into the CSV export and how
the API types it). Everything else is derived from `COLUMNS`: the rows' Arrow columns
(`curation.rows.row_table`), what `curation.corpus` copies from a vehicle, the store's index and
result column sets (`index.store`), the `--where` grammar's columns (`index.query`), the `Hit`
type and the CSV layout (`index.results`), the API's filter and hit models (`serve.schemas`),
the CLI's filter options (`cli`) and the page's filter list (served by `/api/v1/info`).

A new column is one `Column(...)` line here, plus whatever produces its value (e.g. a detector
putting `plate` into each vehicle dict). Light on purpose (pyarrow only): the query path imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

# how a column is read and shown: `keyword` an exact-match string (filters, facets), `text` free
# text (last in the CSV), `id`/`path` strings, `json` JSON text, `float` a number or null, `time`
# unix seconds or null (ISO 8601 in the API and CSV), `box` [x1, y1, x2, y2] or null, `vector`
KINDS = ("keyword", "text", "id", "path", "json", "float", "time", "box", "vector")
# who fills it: `vehicle` copied as-is from the vehicle / image dict the corpus reads (so a new
# producer only sets the key), `label` the row's labels (or curated attributes), `row` set by
# `curation.corpus` itself, `derived` computed by `curation.rows`, `store` added by `index.store`
SOURCES = ("vehicle", "label", "row", "derived", "store")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    kind: str = "keyword"
    source: str = "vehicle"
    optional: bool = False  # tables built before it lack it: read where present (built since boxes)
    where: bool = False  # may be named in `--where` (index.query's grammar)
    filter: bool = False  # a structured filter: API `filters.<name>` / `?name=`, CLI `--name`, the page
    range: bool = False  # a range filter `min_<name>` / `max_<name>` (CLI `--min-<name>`, API `filters.min_<name>`)
    facet: bool = False  # counted over the candidates (API `facets`, the page's chips)
    hit: bool = False  # a field of the Python API's `Hit`
    api: bool = False  # a field of the API's hits (SearchHit)
    csv: str = ""  # its header in the CSV export ("" = not exported; a box is x1,y1,x2,y2)
    index: str = ""  # the scalar index LanceDB builds on it: BITMAP, BTREE or FTS
    label: str = ""  # the page's heading for its filter
    page: str = ""  # where the page shows the filter: `chips` (facets on the left), `scope` (where and when), `input` (a text box)
    fuzzy: bool = False  # a filter matched by `index.plates` (wildcards, OCR look-alikes), not by equality
    help: str = ""  # the CLI option's / API field's description

    def __post_init__(self):
        if self.kind not in KINDS or self.source not in SOURCES:
            raise ValueError(f"column {self.name}: kind {self.kind!r} / source {self.source!r} unknown")
        if self.filter and (self.kind != "keyword" or not (self.label and self.page and self.help)):
            raise ValueError(f"column {self.name}: a filter is a keyword column with a label, a page place and help")
        if self.range and (self.kind != "float" or not self.where or not self.help):
            raise ValueError(f"column {self.name}: a range filter is a float column named in --where, with help")


S, F64 = pa.string(), pa.float64()


def _attr(name: str, label: str, help: str, filter: bool = True) -> Column:
    """A vehicle attribute from the labels vocabulary (low cardinality: a bitmap index)."""
    return Column(
        name,
        S,
        source="label",
        where=True,
        filter=filter,
        facet=filter,
        api=filter,
        index="BITMAP",
        label=label if filter else "",
        page="chips" if filter else "",
        help=help,
    )


# in table order (index.store adds `model_ref` and `vector`), which is also the order the CLI, the
# API and the page list the filters in
# fmt: off
COLUMNS: tuple[Column, ...] = (
    Column("id", S, "id", "row", where=True, hit=True, api=True, csv="id", index="BTREE"),
    Column("path", S, "path", "row", where=True, hit=True),
    Column("caption", S, "text", "row", where=True, hit=True, api=True, csv="caption", index="FTS"),
    _attr("color", "Colour", "Only this colour (repeat for any of several)."),
    _attr("body_type", "Body type", "Only this body type (sedan, suv, ...)."),
    _attr("view", "View", "Only this view: front, rear, side, three-quarter."),
    _attr("make", "Make", "Only this make."),
    _attr("model", "Model", "Only this car model."),
    _attr("model_id", "", "", filter=False),
    _attr("scene", "Scene", "Only this scene (day, night rain, ...)."),
    Column("split", S, source="row", where=True, filter=True, facet=True, api=True, index="BITMAP",
           label="Split", page="chips", help="Only this split (train, val, test)."),
    Column("labels_json", S, "json", "derived", hit=True),  # the Hit's `labels` (decoded)
    Column("origin", S, "path", "row", optional=True, where=True, hit=True, api=True, csv="file",
           help="the source file (the frame, for a vehicle)"),
    Column("model_ref", S, "id", "store"),
    Column("frame_id", S, "id", "derived", optional=True, where=True, hit=True, api=True, csv="frame_id",
           index="BTREE", help="the frame this vehicle is in (the image's own id for a whole image)"),
    Column("box", pa.list_(pa.float32()), "box", optional=True, hit=True, api=True, csv="box",
           help="the vehicle's box in its frame: x1, y1, x2, y2 (pixels)"),
    Column("frame_path", S, "path", optional=True, hit=True),
    Column("box_class", S, optional=True, where=True, hit=True, api=True, index="BITMAP"),
    Column("box_score", pa.float32(), "float", optional=True, hit=True),
    Column("box_source", S, optional=True, where=True),
    Column("camera", S, optional=True, where=True, filter=True, facet=True, hit=True, api=True, csv="camera",
           index="BITMAP", label="Camera", page="scope", help="Only hits from this camera (repeat for several)."),
    Column("time", F64, "time", optional=True, hit=True, api=True, csv="time", index="BTREE",
           help="capture time (ISO 8601, UTC), where known"),
    Column("track_id", S, optional=True, hit=True),
    Column("first_seen", F64, "time", optional=True, hit=True),
    Column("last_seen", F64, "time", optional=True, hit=True),
    Column("track_json", S, "json", optional=True, hit=True),  # a track's member boxes
    Column("direction", S, optional=True, where=True, filter=True, facet=True, hit=True, api=True, csv="direction",
           index="BITMAP", label="Direction", page="chips",
           help="Only tracks going this way in the image: left, right, towards, away, stopped."),
    Column("speed", F64, "float", optional=True, where=True, range=True, hit=True, api=True, csv="speed", index="BTREE",
           help="a track's speed, in `speed_unit`"),
    Column("speed_unit", S, optional=True, where=True, hit=True, api=True, csv="speed_unit",
           help="km/h on a camera with a ground homography (conf/cameras.yaml), else px/s"),
    Column("heading", F64, "float", optional=True, where=True, hit=True, api=True, csv="heading",
           help="a track's compass heading (degrees, 0 = north) where its camera's geometry is known"),
    Column("compass", S, optional=True, where=True, filter=True, facet=True, hit=True, api=True, csv="compass",
           index="BITMAP", label="Heading", page="chips",
           help="Only tracks heading this way on the ground: north, east, south or west (cameras with a "
                "heading or homography in conf/cameras.yaml)."),
    Column("plate", S, source="derived", optional=True, where=True, filter=True, hit=True, api=True, csv="plate",
           index="BTREE", label="Plate", page="input", fuzzy=True,
           help="Only this number plate: * and ? wildcards, OCR look-alikes (0/O, 8/B, 1/I, 5/S) tolerated."),
    Column("vector", pa.float32(), "vector", "store"),
)
# fmt: on


class Row:
    """The column sets derived from a column list (`ROW` for the live one; tests derive their own)."""

    def __init__(self, columns: tuple[Column, ...]):
        self.columns = columns
        self.by_name = {c.name: c for c in columns}
        names = lambda pred: tuple(c.name for c in columns if pred(c))  # noqa: E731
        self.metadata = names(lambda c: c.source != "store")  # what curation.rows.row_table holds
        self.selected = names(lambda c: c.source != "store" or c.name == "model_ref")
        self.required = names(lambda c: not c.optional and c.source != "store")  # every table has them
        self.optional = names(lambda c: c.optional)  # read where the table has them
        self.vehicle = names(lambda c: c.source == "vehicle")  # curation.corpus copies them from a vehicle
        self.labels = names(lambda c: c.source == "label")
        self.where = names(lambda c: c.where)
        self.filters = names(lambda c: c.filter)
        # the range filters: {"min_speed": ("speed", ">="), "max_speed": ("speed", "<=")}
        self.ranges = {
            f"{e}_{c.name}": (c.name, op) for c in columns if c.range for e, op in (("min", ">="), ("max", "<="))
        }
        self.facets = names(lambda c: c.facet)
        self.fuzzy = names(lambda c: c.fuzzy)  # filters index.plates matches (CarSearch.plan resolves them)
        self.hit = names(lambda c: c.hit)
        self.api = names(lambda c: c.api)
        self.indexed = {c.name: c.index for c in columns if c.index}
        # the CSV: free text last, so the other columns line up in a spreadsheet
        self.csv = tuple(sorted((c for c in columns if c.csv), key=lambda c: c.kind == "text"))

    def page_filters(self) -> list[dict]:
        """The page's filters (served by /api/v1/info): name, heading and where it is shown."""
        return [{"name": c.name, "label": c.label, "page": c.page} for c in self.columns if c.filter]

    def arrow_schema(self) -> pa.Schema:
        """The rows' Arrow schema (`curation.rows.row_table`): the table's less `model_ref` and `vector`."""
        return pa.schema([pa.field(c.name, c.type) for c in self.columns if c.source != "store"])


ROW = Row(COLUMNS)

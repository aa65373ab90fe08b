"""Write the bad-input corpus: every kind of file a real image folder throws at ingest.

Usage: python scripts/make_bad_inputs.py [DEST]   (default tests/fixtures/bad_inputs; the tests
generate it into a temp folder instead, nothing binary is committed)

DEST/images/          the folder to ingest (data=folder data.folder.path=DEST/images)
DEST/refs/<name>.png  what a kept image must look like (upright, 8-bit, on white)
DEST/labels_variants/ labels.csv files in every broken shape (BOM, cp1252, semicolons, ...)
DEST/expected.json    {rel path: {"kept": true, "ref": ...} | {"kept": false, "reason": prefix}}

Cases in images/ (see CASES below for the exact list): a normal JPEG; a 16-bit greyscale PNG;
a JPEG with EXIF orientation 6; a 20000x20000 decompression bomb (a valid 1-bit PNG of ~60 kB,
written row by row); a 10000x10000 PNG (allowed, downscaled); an empty file; a truncated JPEG;
random bytes; a PNG named .jpg; a CMYK JPEG; a palette PNG with a transparent colour; an RGBA
PNG; an animated GIF; a 1x1 PNG; WebP; TIFF; BMP; HEIC and AVIF photos (read: pillow-heif, Pillow) and broken ones no decoder reads (an
`ftyp` header and junk); a non-ASCII name with spaces; a hidden file; a hidden folder; an exact
duplicate; an unreadable file (chmod 000; only unreadable to a non-root reader); nested folders
with a colour folder above a year folder (`red/2024/`); a dangling symlink; a symlink to itself
(a loop); a symlinked folder pointing back up (a directory loop); a text file; a labels.csv with a
BOM, semicolons, odd header case, synonyms, an unknown value, duplicate rows and rows naming
missing files. Not here (tested in tests/test_curate.py and tests/test_bedrock.py): malformed
`.jsonl.out` lines, LLM refusals and captions that are not JSON.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pillow_heif
from PIL import Image, ImageDraw

pillow_heif.register_heif_opener()  # to write the HEIC photo (carsearch reads it the same way)


def _picture(size=(96, 64)) -> Image.Image:
    """An asymmetric RGB picture (so any rotation or flip shows): red top-left block, blue
    bottom band, on grey."""
    w, h = size
    im = Image.new("RGB", size, (128, 128, 128))
    d = ImageDraw.Draw(im)
    d.rectangle([0, 0, w // 3, h // 2], fill=(220, 30, 30))
    d.rectangle([0, h * 3 // 4, w, h], fill=(30, 40, 200))
    return im


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)


def stream_png(width: int, height: int, row: bytes, bit_depth: int, color_type: int) -> bytes:
    """A valid PNG of `height` identical rows (filter 0), compressed row by row: huge pixel
    counts in a few kB, in well under a second."""
    z = zlib.compressobj(9)
    parts, line = [], b"\0" + row
    for _ in range(height):
        parts.append(z.compress(line))
    parts.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def make_bad_inputs(dest: Path) -> dict:
    dest = Path(dest)
    img, refs, var = dest / "images", dest / "refs", dest / "labels_variants"
    for d in (img, refs, var):
        d.mkdir(parents=True, exist_ok=True)
    expected: dict[str, dict] = {}

    def put(rel: str, data: bytes, ref: Image.Image | None = None, reason: str | None = None):
        p = img / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        if reason is not None:
            expected[rel] = {"kept": False, "reason": reason}
        else:
            name = rel.replace("/", "__") + ".png"
            (ref or Image.open(io.BytesIO(data)).convert("RGB")).save(refs / name)
            expected[rel] = {"kept": True, "ref": name}

    pic = _picture()
    ok = _bytes(pic, "JPEG", quality=95)
    put("ok.jpg", ok, pic)
    put("ok_copy.jpg", ok, reason="exact duplicate")

    # 16-bit greyscale (mode I;16): a left-to-right ramp over the full 0..65535 range
    ramp = np.tile(np.linspace(0, 65535, 80).astype(np.uint16), (48, 1))
    put(
        "gray16.png",
        _bytes(Image.fromarray(ramp), "PNG"),
        Image.fromarray((ramp / 257).round().astype(np.uint8)).convert("RGB"),
    )

    # EXIF orientation 6: pixels stored rotated 90 degrees counter-clockwise, displayed upright
    exif = Image.Exif()
    exif[0x0112] = 6
    put("exif6.jpg", _bytes(pic.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif.tobytes()), pic)

    # a decompression bomb: 20000 x 20000 1-bit, and a big-but-allowed 10000 x 10000 greyscale
    put("bomb.png", stream_png(20000, 20000, b"\0" * 2500, 1, 0), reason="image too large")
    half = b"\0" * 5000 + b"\xff" * 5000  # left half black, right half white
    put(
        "huge_10000.png",
        stream_png(10000, 10000, half, 8, 0),
        Image.frombytes("L", (100, 1), b"\0" * 50 + b"\xff" * 50).resize((100, 100)).convert("RGB"),
    )

    put("empty.jpg", b"", reason="empty file")
    full = _bytes(_picture((200, 160)), "JPEG", quality=90)
    put("truncated.jpg", full[: len(full) // 2], reason="corrupt or truncated")
    put("random.png", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), reason="not an image")
    put("png_named.jpg", _bytes(pic, "PNG"), pic)
    put("notes.txt", b"not an image\n", reason="not an image")

    put("cmyk.jpg", _bytes(pic.convert("CMYK"), "JPEG", quality=95), pic)
    # palette with a transparent colour: the background must come out white, not black
    pal = Image.new("P", (64, 48), 0)
    pal.putpalette([0, 0, 0, 220, 30, 30] + [0] * 762)
    ImageDraw.Draw(pal).rectangle([16, 12, 47, 35], fill=1)
    on_white = Image.new("RGB", (64, 48), (255, 255, 255))
    ImageDraw.Draw(on_white).rectangle([16, 12, 47, 35], fill=(220, 30, 30))
    put("palette_alpha.png", _bytes(pal, "PNG", transparency=0), on_white)
    rgba = Image.new("RGBA", (72, 48), (0, 0, 0, 0))  # fully transparent black around a red box
    ImageDraw.Draw(rgba).rectangle([16, 12, 47, 35], fill=(220, 30, 30, 255))
    rgba_ref = Image.new("RGB", (72, 48), (255, 255, 255))
    ImageDraw.Draw(rgba_ref).rectangle([16, 12, 47, 35], fill=(220, 30, 30))
    put("rgba.png", _bytes(rgba, "PNG"), rgba_ref)

    frames = [Image.new("RGB", (48, 48), c) for c in ((220, 30, 30), (30, 200, 30), (30, 40, 200))]
    put(
        "animated.gif",
        _bytes(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0),
        frames[0],
    )
    put("one_pixel.png", _bytes(Image.new("RGB", (1, 1), "red"), "PNG"), reason="image too small")
    for rel, size, fmt, kw in (
        ("photo.webp", (94, 64), "WEBP", {"lossless": True}),
        ("scan.tif", (98, 66), "TIFF", {}),
        ("old.bmp", (100, 62), "BMP", {}),
    ):
        put(rel, _bytes(_picture(size), fmt, **kw), _picture(size))
    for rel, size, fmt in (("phone.heic", (92, 64), "HEIF"), ("modern.avif", (90, 66), "AVIF")):
        put(rel, _bytes(_picture(size), fmt, quality=95), _picture(size))  # phones' formats: read and kept
    put("broken.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + b"\0" * 200, reason="corrupt or truncated")
    put("broken.avif", b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf" + b"\0" * 200, reason="corrupt or truncated")
    put("ünïcödé name with spaces.jpg", _bytes(_picture((80, 80)), "JPEG", quality=95))
    put(".hidden.jpg", _bytes(_picture((70, 70)), "JPEG"), reason="hidden")
    put(".thumbs/t.jpg", _bytes(_picture((60, 60)), "JPEG"), reason="hidden")
    expected.pop(".thumbs/t.jpg")
    expected[".thumbs"] = {"kept": False, "reason": "hidden"}
    put("locked.jpg", _bytes(_picture((90, 60)), "JPEG"), reason="unreadable")
    os.chmod(img / "locked.jpg", 0)
    put("red/2024/car.jpg", _bytes(_picture((72, 72)), "JPEG", quality=95))
    put("nested/deeper/still/car.png", _bytes(_picture((66, 50)), "PNG"))

    os.symlink("missing.jpg", img / "dangling.jpg")
    expected["dangling.jpg"] = {"kept": False, "reason": "dangling symlink"}
    os.symlink("selfloop.jpg", img / "selfloop.jpg")
    expected["selfloop.jpg"] = {"kept": False, "reason": "symlink loop"}
    os.symlink("..", img / "nested" / "up")
    expected["nested/up"] = {"kept": False, "reason": "symlinked folder"}

    # labels.csv: Excel-style (BOM, semicolons, " File"/"Color" headers), a synonym, an unknown
    # value, duplicate rows (conflicting) and a row naming a file that is not there
    (img / "labels.csv").write_bytes(
        "\ufeff File ;Color; Body Type\n".encode()
        + "\n".join(
            [
                "ok.jpg;Gray;Saloon",  # row 2: grey sedan
                "exif6.jpg;red;pickup",  # row 3
                "exif6.jpg;blue;pickup",  # row 4: conflicts with row 3 -> neither used
                "gone.jpg;red;van",  # row 5: no such file
                "photo.webp;teal;van",  # row 6: teal is not a colour of the vocabulary
            ]
        ).encode()
        + b"\n"
    )
    expected["labels.csv"] = {"kept": None}
    expected["gone.jpg"] = {"kept": False, "reason": "labels.csv row 5 names a file that does not exist"}

    header = "file,color,view\n"
    variants = {
        "bom.csv": ("\ufeff" + header + "a.jpg,red,front\n").encode(),
        "cp1252.csv": (header + "a.jpg,red,front\n").encode()
        + "b.jpg,blue,rear\n".encode()
        + "Citroën.jpg,red,side\n".encode("cp1252"),
        "semicolon.csv": b"file;color;view\na.jpg;red;front\n",
        "header_case.csv": b" File , COLOR ,View\na.jpg,Red,Back\n",
        "duplicates.csv": (header + "a.jpg,red,front\na.jpg,red,front\nb.jpg,red,side\nb.jpg,blue,side\n").encode(),
        "no_file_column.csv": b"name,color\na.jpg,red\n",
    }
    for name, data in variants.items():
        (var / name).write_bytes(data)
    (dest / "expected.json").write_text(json.dumps(expected, indent=1, ensure_ascii=False) + "\n")
    return expected


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(
        description="Write the bad-input corpus (images/, refs/, labels_variants/, expected.json)."
    )
    ap.add_argument(
        "out", nargs="?", type=Path, default=Path(__file__).resolve().parents[1] / "tests/fixtures/bad_inputs"
    )
    out = ap.parse_args().out
    exp = make_bad_inputs(out)
    print(f"wrote {len(exp)} cases to {out}")

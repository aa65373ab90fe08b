"""The one safe way to read an image: every reader in carsearch goes through `open_rgb` (or, at
ingest, `load` + `normalise`), so no consumer sees a sideways photo, a 16-bit PNG clipped to white,
a transparent logo on black or a decompression bomb.

- `load(src)`: open and fully decode the first frame; a bad file raises `ImageError` (a
  `ValueError`) with a one-line reason; images over `max_pixels` are refused before decoding.
- `normalise(im)`: upright (EXIF orientation applied), 8-bit (16/32-bit and float modes scaled,
  not clipped), transparency composited on white, CMYK and other modes to RGB, optionally
  downscaled to a longest edge.
- `open_rgb(src)`: both, returning an RGB `PIL.Image.Image`.
- `open_image(src)`: PIL's lazy open (header only: size, format, EXIF), for readers that need no
  pixels. Every `Image.open` of an image a user gave goes through here or the above, so every
  reader reads the same formats (HEIC/HEIF through pillow-heif, registered below; AVIF).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from carsearch.core.errors import CarsearchError

pillow_heif.register_heif_opener()  # HEIC/HEIF (phone photos) through the same reader; Pillow reads AVIF itself

DEFAULT_MAX_PIXELS = 150_000_000  # data.max_pixels: bigger images are refused (decompression-bomb guard)
DEFAULT_MAX_EDGE = 2048  # data.max_edge: ingest downscales bigger images to this longest edge
STORED_FORMATS = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}  # read correctly by every consumer
STORED_MODES = {"RGB", "L"}

_LOCK = threading.RLock()


class ImageError(CarsearchError, ValueError):
    """An image that cannot be used; str() is a one-line reason."""


@dataclass(frozen=True)
class ImageInfo:
    width: int  # of the upright image (EXIF orientation applied)
    height: int
    format: str  # lower-case PIL format name ("jpeg", "png", ...)
    mode: str
    frames: int
    orientation: int  # EXIF orientation tag, 1 = upright

    def reencode_reason(self, max_edge: int | None = None) -> str | None:
        """Why the bytes cannot be stored as they are (None: they can)."""
        if self.orientation != 1:
            return f"EXIF orientation {self.orientation}"
        if self.mode not in STORED_MODES:
            return f"mode {self.mode}"
        if self.frames > 1:
            return f"{self.frames} frames"
        if self.format not in STORED_FORMATS:
            return f"format {self.format or 'unknown'}"
        if max_edge and max(self.width, self.height) > max_edge:
            return f"longer than {max_edge} px"
        return None


@contextlib.contextmanager
def _own_pixel_limit():
    """PIL's global bomb check warns above ~89 MP and raises above ~179 MP; we apply our own
    `max_pixels` from the header instead, so switch PIL's off while we decode."""
    with _LOCK:
        old = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _unknown_format(head: bytes) -> str:
    if head[4:8] == b"ftyp":
        brand = head[8:12].decode("latin-1", "replace").strip()
        kind = (
            "AVIF"
            if brand.startswith("avi")
            else "HEIC/HEIF"
            if brand in {"heic", "heix", "hevc", "mif1", "msf1", "heim", "heis"}
            else f"ISO media ({brand})"
        )
        if kind in ("AVIF", "HEIC/HEIF"):  # both are read (Pillow, pillow-heif): this one is broken
            return f"corrupt or truncated image ({kind} that its decoder cannot read)"
        return f"unsupported format {kind} (no installed decoder reads it)"
    return "not an image (unrecognised format)"


def _orientation(im: Image.Image) -> int:
    try:
        o = int(im.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a broken EXIF block must not lose the picture  # noqa: BLE001
        return 1
    return o if 1 <= o <= 8 else 1


def load(
    src: str | os.PathLike | bytes,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    min_side: int = 1,
    draft: tuple[int, int] | None = None,
) -> tuple[Image.Image, ImageInfo]:
    """Open `src` (a path or the bytes) and decode its first frame fully; return the decoded image
    (raw mode, not yet upright) and its info. Raises ImageError with a one-line reason.
    `draft=(w, h)`: a JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) still at least
    that size (PIL `draft()`, several times faster); the info keeps the full size."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        if not src:
            raise ImageError("empty file")
        fp, head = io.BytesIO(bytes(src)), bytes(src[:16])
    else:
        try:
            with open(src, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ImageError(f"unreadable ({e.strerror or type(e).__name__})") from None
        return load(data, max_pixels, min_side, draft)
    with _own_pixel_limit():
        try:
            im = Image.open(fp)
        except UnidentifiedImageError:
            raise ImageError(_unknown_format(head)) from None
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001  (every decoder error is a reject, never a crash)
            raise ImageError(f"corrupt or truncated image ({_first_line(e)})") from None
        w, h = im.size
        if max_pixels and w * h > max_pixels:
            raise ImageError(
                f"image too large ({w}x{h} = {w * h / 1e6:.0f} MP, data.max_pixels is {max_pixels / 1e6:.0f} MP)"
            )
        if draft and im.format == "JPEG" and im.mode in ("RGB", "L"):
            with contextlib.suppress(Exception):
                im.draft(im.mode, (int(draft[0]), int(draft[1])))
        try:
            im.load()  # catches truncation
        except MemoryError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ImageError(f"corrupt or truncated image ({_first_line(e)})") from None
    if min(w, h) < min_side:
        raise ImageError(f"image too small ({w}x{h}, need >= {min_side}px a side)")
    o = _orientation(im)
    if o >= 5:
        w, h = h, w
    return im, ImageInfo(w, h, (im.format or "").lower(), im.mode, int(getattr(im, "n_frames", 1) or 1), o)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def to_8bit(im: Image.Image) -> Image.Image:
    """16-bit, 32-bit and float greyscale scaled into 0..255 (PIL's convert() clips them)."""
    if im.mode.startswith("I;16"):
        a = np.asarray(im, dtype=np.float64) / 257.0
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0 and hi <= 1.0:
            a = a * 255.0  # float images in 0..1
        elif lo >= 0 and hi <= 255:
            pass
        elif lo >= 0 and hi <= 65535:
            a = a / 257.0  # 16-bit data held in a 32-bit mode
        else:
            a = (a - lo) * (255.0 / (hi - lo or 1.0))
    else:
        return im
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")


def _flatten(im: Image.Image) -> Image.Image:
    """Any 8-bit mode -> L or RGB; transparency composited on white."""
    if im.mode == "1":
        return im.convert("L")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode in ("L", "RGB"):
        return im
    try:
        return im.convert("RGB")  # P, CMYK (PIL handles Adobe's inverted CMYK), YCbCr, HSV ...
    except (ValueError, OSError) as e:
        raise ImageError(f"unsupported colour mode {im.mode} ({_first_line(e)})") from None


def normalise(im: Image.Image, max_edge: int | None = None) -> Image.Image:
    """The upright, 8-bit RGB picture of a loaded image, downscaled to `max_edge` if given."""
    try:
        up = ImageOps.exif_transpose(im)  # a copy, upright, orientation tag removed
    except Exception:  # noqa: BLE001  (broken EXIF: keep the pixels as stored)
        up = im.copy()
    up = _flatten(to_8bit(up))
    if max_edge and max(up.size) > max_edge:
        up.thumbnail((max_edge, max_edge), Image.LANCZOS, reducing_gap=3.0)
    return up if up.mode == "RGB" else up.convert("RGB")


def open_image(src: str | os.PathLike | bytes | io.IOBase) -> Image.Image:
    """PIL's lazy open of a path, the bytes or a binary file object, with every decoder carsearch
    reads registered (HEIC/HEIF too): the header is read, the pixels when used. PIL's errors
    (UnidentifiedImageError...) propagate; use `load`/`check` for a one-line ImageError."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(bytes(src))
    return Image.open(src)


def open_rgb(
    src: str | os.PathLike | bytes,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_edge: int | None = None,
    draft: tuple[int, int] | None = None,
) -> Image.Image:
    """Read any image as an upright 8-bit RGB picture (see the module doc); ImageError if unusable.
    `draft=(w, h)`: decode a JPEG at a reduced size no smaller than that (see `load`)."""
    im, _ = load(src, max_pixels, draft=draft)
    with im:
        return normalise(im, max_edge)


def check(src: str | os.PathLike | bytes, max_pixels: int | None = DEFAULT_MAX_PIXELS, min_side: int = 1) -> ImageInfo:
    """Decode fully and return the info, or raise ImageError (a ValueError) with a one-line reason."""
    im, info = load(src, max_pixels, min_side)
    im.close()
    return info


def encode(picture: Image.Image, source: Image.Image | None = None) -> tuple[bytes, str]:
    """Bytes and extension to store a normalised picture: JPEG with the source's own quantisation
    tables (so no quality is lost or invented) when the source was a JPEG, else lossless PNG."""
    buf = io.BytesIO()
    if source is not None and (source.format or "").upper() == "JPEG":
        from PIL import JpegImagePlugin

        opts: dict = {"quality": 95}
        with contextlib.suppress(Exception):
            tables = getattr(source, "quantization", None)
            if tables:
                opts = {"qtables": [tables[k] for k in sorted(tables)][:2]}
            sampling = JpegImagePlugin.get_sampling(source)
            if sampling != -1 and source.mode in ("RGB", "YCbCr"):
                opts["subsampling"] = sampling
        try:
            picture.save(buf, format="JPEG", **opts)
        except (ValueError, OSError):
            buf = io.BytesIO()
            picture.save(buf, format="JPEG", quality=95)
        return buf.getvalue(), ".jpg"
    picture.save(buf, format="PNG")
    return buf.getvalue(), ".png"


__all__ = [
    "DEFAULT_MAX_EDGE",
    "DEFAULT_MAX_PIXELS",
    "ImageError",
    "ImageInfo",
    "check",
    "encode",
    "load",
    "normalise",
    "open_image",
    "open_rgb",
    "to_8bit",
]

"""Each camera's frames as an H.264 mp4 (PyAV), byte-identical for the same frames."""

from __future__ import annotations

from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def yuv420p(rgb: np.ndarray) -> np.ndarray:
    """An RGB frame (even width and height) as planar YUV 4:2:0 (BT.601, limited range) in integer
    NumPy, laid out as PyAV's `yuv420p` ndarray (Y rows, then U, then V). libswscale's conversion
    takes different SIMD paths depending on how the input buffer happens to be aligned, so the
    same frame could encode to different bytes from run to run; this conversion cannot."""
    h, w, _ = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"a yuv420p frame needs an even size, got {w}x{h}")
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    y = ((66 * r + 129 * g + 25 * b + 128) >> 8) + 16
    # chroma from the 2x2 block means (rounded), as 4:2:0 samples it
    r2, g2, b2 = ((c.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) + 2) >> 2 for c in (r, g, b))
    u = ((-38 * r2 - 74 * g2 + 112 * b2 + 128) >> 8) + 128
    v = ((112 * r2 - 94 * g2 - 18 * b2 + 128) >> 8) + 128
    planes = [y.reshape(-1), u.reshape(-1), v.reshape(-1)]
    return np.concatenate(planes).clip(0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def write_videos(items: list[tuple[Path, dict, list[dict], float]], out_dir: Path, interval_s: float) -> list[Path]:
    """Each session's camera as an H.264 mp4 (PyAV) of its frames in order, one frame every
    `interval_s`, stamped with the first frame's time (`creation_time`), so the video path of a
    folder corpus reads it back with camera time."""
    groups: dict[str, list] = {}
    for p, lab, _, epoch in items:
        groups.setdefault(f"session{lab['session']}_{lab['camera']}", []).append((lab["frame_index"], p, epoch))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rate = Fraction(1 / interval_s).limit_denominator(1000)
    paths = []
    for key, frames in sorted(groups.items()):
        frames.sort()
        path = out_dir / f"{key}.mp4"
        with av.open(str(path), "w") as container:
            container.metadata["creation_time"] = datetime.fromtimestamp(frames[0][2], timezone.utc).isoformat()
            stream = container.add_stream("libx264", rate=rate)
            first = Image.open(frames[0][1])
            stream.width, stream.height, stream.pix_fmt = first.width, first.height, "yuv420p"
            stream.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
            for _, p, _ in frames:
                frame = av.VideoFrame.from_ndarray(yuv420p(np.asarray(Image.open(p).convert("RGB"))), format="yuv420p")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        paths.append(path)
    return paths

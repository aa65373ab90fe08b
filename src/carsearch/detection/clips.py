"""Cut a segment out of a video with PyAV (the evidence bundles' clips, carsearch.index.export).

Offsets are seconds from the video's first frame, as `video.iter_frames` gives them (the offset in a
sampled frame's name `<video>#t=<offset>s`). The segment [start, end] is decoded and re-encoded as
H.264 in an mp4 at the source's frame rate (a stream copy could only start at a key frame), each
frame keeping its own time from the segment's start; the clip carries the source's
`creation_time` moved on by `start`, so a player and `video.probe` read the segment's wall time.
"""

from __future__ import annotations

import io
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import av

from carsearch.detection.video import VideoError, av_reason, container_start, open_video


def _rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
    return Fraction(rate).limit_denominator(1000)


def _open_bytes(data: bytes, label: str):
    try:
        container = av.open(io.BytesIO(data))
    except (av.FFmpegError, OSError) as e:
        raise VideoError(f"{label}: unreadable video ({av_reason(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{label}: no video stream")
    return container


def cut(src: str | Path | bytes, start: float, end: float, name: str = "") -> tuple[bytes, dict]:
    """(the mp4's bytes, {"frames", "start", "end"}) of the segment of `src` (a path or the video's
    bytes) from `start` to `end` seconds after its first frame (clamped to the video). VideoError,
    one line naming the video (`name`), when it is unreadable or the segment holds no frame."""
    label = name or str(src if not isinstance(src, bytes) else "video")
    if end < start:
        raise VideoError(f"{label}: clip {start:.3f}-{end:.3f}s ends before it starts")
    container = _open_bytes(src, label) if isinstance(src, bytes) else open_video(Path(src))
    out_buf = io.BytesIO()
    frames, first, t0, t1 = 0, None, None, None
    try:
        stream = container.streams.video[0]
        rate = _rate(stream)
        began = container_start(container)
        with av.open(out_buf, "w", format="mp4") as out:
            if began is not None:
                out.metadata["creation_time"] = datetime.fromtimestamp(
                    began + max(start, 0.0), timezone.utc
                ).isoformat()
            enc = out.add_stream("libx264", rate=rate)
            enc.width, enc.height, enc.pix_fmt = stream.codec_context.width, stream.codec_context.height, "yuv420p"
            enc.codec_context.time_base = 1 / rate
            enc.options = {"crf": "20", "preset": "veryfast", "threads": "1"}
            try:
                for i, frame in enumerate(container.decode(stream)):
                    t = frame.time if frame.time is not None else float(i / rate)
                    first = t if first is None else first
                    off = t - first
                    if off + 1e-6 < start:
                        continue
                    if off > end + 1e-6:
                        break
                    t0 = off if t0 is None else t0
                    t1 = off
                    img = frame.reformat(format="yuv420p")
                    img.pts, img.time_base = round((off - t0) * rate), enc.codec_context.time_base
                    out.mux(enc.encode(img))
                    frames += 1
            except (av.FFmpegError, OSError) as e:
                raise VideoError(f"{label}: damaged video after {frames} clip frames ({av_reason(e)})") from None
            if frames:
                out.mux(enc.encode(None))
    finally:
        container.close()
    if not frames:
        raise VideoError(f"{label}: no frame between {start:.3f}s and {end:.3f}s (the video is shorter)")
    return out_buf.getvalue(), {"frames": frames, "start": round(t0, 3), "end": round(t1, 3)}

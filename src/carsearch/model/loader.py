"""Keep the model fed: decode and resize images in parallel worker processes (a torch DataLoader),
in the model's own preprocessing, so the forward pass never waits on JPEG decoding.

- Every image is read with `carsearch.core.imaging.open_rgb` (EXIF orientation, 16-bit, alpha, bomb
  guard); a JPEG is decoded at a reduced DCT scale (PIL `draft()`, 1/2..1/8) that is still at least
  the model's input size, which makes decoding a 1024x768 photo for a 224 px model ~3-8x cheaper.
- `ClipPreprocess` (carsearch.model.preprocess) is the CLIP image processor's preprocessing (resize the
  shortest side with its resample filter, centre crop, rescale, normalise with its mean/std), in
  NumPy/PIL, so it runs in the workers without transformers; tests/test_loader.py checks it
  against the processor.
- Batches come out of `pin_memory` on CUDA and are moved with `non_blocking=True`.
- A file that cannot be read raises `ImageError` with its one-line reason, as `open_rgb` does.
"""

from __future__ import annotations

import os
from typing import Iterator, Sequence

import torch
from PIL import Image

from carsearch.core.imaging import ImageError, open_rgb
from carsearch.model.preprocess import ClipPreprocess

__all__ = ["ClipPreprocess", "ImageFiles", "batches", "default_workers"]


class ImageFiles(torch.utils.data.Dataset):
    """Images (paths or bytes) -> (pixel tensor, "" | reject reason)."""

    def __init__(self, sources: Sequence, prep: ClipPreprocess, draft: bool = True, max_pixels: int | None = None):
        self.sources, self.prep, self.draft, self.max_pixels = list(sources), prep, draft, max_pixels

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i: int):
        src = self.sources[i]
        try:
            im = (
                src
                if isinstance(src, Image.Image)
                else open_rgb(src, self.max_pixels, draft=self.prep.draft_size if self.draft else None)
            )
            return torch.from_numpy(self.prep(im)), ""
        except ImageError as e:  # raised again by the consumer, in order
            return torch.zeros((3, self.prep.crop_h, self.prep.crop_w)), str(e) or "unreadable image"


def _collate(items):
    return torch.stack([x for x, _ in items]), [err for _, err in items]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # the workers decode (PIL releases the GIL per image); the model owns the cores


def default_workers() -> int:
    """One decoding worker per core beyond the first, at most 8 (the main process runs the model)."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def batches(
    sources: Sequence,
    prep: ClipPreprocess,
    batch_size: int = 64,
    num_workers: int | None = None,
    draft: bool = True,
    device: torch.device | str | None = None,
    prefetch: int = 4,
) -> Iterator[torch.Tensor]:
    """Preprocessed pixel batches [B, 3, H, W] of `sources` in order, decoded by `num_workers`
    processes (None: `default_workers()`; 0: in this process), on `device` (pinned memory and
    non-blocking copies on CUDA). Raises ImageError for the first unreadable image."""
    device = torch.device(device or "cpu")
    workers = default_workers() if num_workers is None else int(num_workers)
    n_batches = -(-len(sources) // batch_size)
    workers = 0 if n_batches <= 1 else min(workers, n_batches)  # one batch: decoding here beats starting a process
    dl = torch.utils.data.DataLoader(
        ImageFiles(sources, prep, draft),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=prefetch if workers else None,
        persistent_workers=False,
    )
    for pix, errors in dl:
        bad = [e for e in errors if e]
        if bad:
            raise ImageError(bad[0])
        yield pix.to(device, non_blocking=device.type == "cuda")

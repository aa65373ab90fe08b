"""The CLIP image processor's preprocessing in NumPy/PIL (no torch, no transformers), so decode
workers (carsearch.model.loader's DataLoader processes, Ray Data tasks in carsearch.index.ray_engine) run it cheaply
and exactly as `CLIPImageProcessor(Pil)` does (tests/test_loader.py compares them)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


def _get(obj, key):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


@dataclass(frozen=True)
class ClipPreprocess:
    """CLIPImageProcessor(Pil)'s steps: shortest side -> `shortest_edge` (`resample`), centre crop
    to (crop_h, crop_w), x * rescale_factor, (x - mean) / std; channels first, float32."""

    shortest_edge: int
    crop_h: int
    crop_w: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: int = int(Image.BICUBIC)
    rescale_factor: float = 1 / 255

    @classmethod
    def from_processor(cls, processor) -> "ClipPreprocess":
        """The steps of a CLIPProcessor's image processor; ValueError if it does something else
        (then `encode_images` keeps using the processor itself)."""
        ip = getattr(processor, "image_processor", processor)
        size, crop = getattr(ip, "size", None), getattr(ip, "crop_size", None)
        edge = _get(size, "shortest_edge")
        flags = [getattr(ip, f, True) for f in ("do_resize", "do_center_crop", "do_rescale", "do_normalize")]
        if (
            not edge
            or not all(flags)
            or _get(crop, "height") is None
            or _get(size, "longest_edge")
            or getattr(ip, "do_pad", False)
        ):
            raise ValueError(f"not a CLIP-style image processor ({type(ip).__name__}, size {size}, crop {crop})")
        mean, std = ip.image_mean, ip.image_std
        return cls(
            int(edge),
            int(_get(crop, "height")),
            int(_get(crop, "width")),
            tuple(map(float, mean)),
            tuple(map(float, std)),
            int(getattr(ip, "resample", None) if getattr(ip, "resample", None) is not None else Image.BICUBIC),
            float(getattr(ip, "rescale_factor", 1 / 255)),
        )

    @property
    def draft_size(self) -> tuple[int, int]:
        """The smallest decode size that still covers the resize (both sides >= shortest_edge)."""
        return (self.shortest_edge, self.shortest_edge)

    def resize_to(self, width: int, height: int) -> tuple[int, int]:
        s = self.shortest_edge  # transformers' get_resize_output_image_size(default_to_square=False)
        if width <= height:
            return s, int(s * height / width)
        return int(s * width / height), s

    def __call__(self, im: Image.Image) -> np.ndarray:
        if im.mode != "RGB":
            im = im.convert("RGB")
        im = im.resize(self.resize_to(*im.size), resample=self.resample)
        a = np.asarray(im)
        h, w = a.shape[:2]
        top, left = (h - self.crop_h) // 2, (w - self.crop_w) // 2
        if top < 0 or left < 0:  # smaller than the crop: zero-pad around it, as transformers does
            ph, pw = max(self.crop_h, h), max(self.crop_w, w)
            pad = np.zeros((ph, pw, 3), a.dtype)
            t0, l0 = -(-(ph - h) // 2), -(-(pw - w) // 2)
            pad[t0 : t0 + h, l0 : l0 + w] = a
            a, top, left = pad, top + t0, left + l0
        a = a[top : top + self.crop_h, left : left + self.crop_w].astype(np.float32) * np.float32(self.rescale_factor)
        a = (a - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(a.transpose(2, 0, 1))

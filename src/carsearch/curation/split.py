"""Deterministic splits: the train/val/test split of a key (a hash, same on every machine) and the
perceptual near-duplicate groups that keep look-alike images in one split."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image

from carsearch.core import imaging, xmath


# ------------------------------------------------------------------------------ splits
def split_of(key: str, seed: int, fractions: dict[str, float]) -> str:
    """Deterministic split by hashing (seed, key); `fractions` ordered train/val/test summing to 1."""
    u = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:12], 16) / 16**12
    acc = 0.0
    for name, frac in fractions.items():
        acc += frac
        if u < acc:
            return name
    return list(fractions)[-1]


def perceptual_groups(paths: dict[str, Path], max_distance: int) -> dict[str, str]:
    """Map each id to the id of its group's first member, grouping images whose pHash differ by
    <= max_distance bits (max_distance < 0 disables).

    The pHash is imagehash.phash's (32x32 LANCZOS greyscale, 2-D DCT-II, 8x8 low frequencies >
    their median) but the DCT is computed here with a fixed cosine table (render.xmath, no libm)
    and sums in a fixed order, instead of scipy.fftpack: pocketfft's twiddles come from libm
    sin/cos (glibc picks FMA variants by CPU) and a last-bit change flips a hash bit whenever a
    coefficient sits at the median (flat images have many near-zero ones), so the grouping could
    differ between machines. Same bits as imagehash.phash except at such ties."""
    import imagehash
    import numpy as np

    if max_distance < 0:
        return {i: i for i in paths}
    n, k = 32, 8
    m = (np.arange(k)[:, None] * (2 * np.arange(n)[None, :] + 1)) % (4 * n)  # angle pi*m/(2n), exact ints
    C = 2.0 * xmath.cos(m * (xmath.PI / (2 * n)))  # (k, n), scipy's unnormalised DCT-II

    def phash(im) -> "imagehash.ImageHash":
        g = np.asarray(im.convert("L").resize((n, n), Image.LANCZOS), np.float64)
        cols = np.zeros((k, n))
        for j in range(n):  # DCT along axis 0, summed in row order (no BLAS)
            cols = cols + C[:, j : j + 1] * g[j][None, :]
        d = np.zeros((k, k))
        for j in range(n):  # then along axis 1
            d = d + cols[:, j : j + 1] * C[:, j][None, :]
        return imagehash.ImageHash(d > np.median(d))

    hashes = {}
    for iid, p in paths.items():
        hashes[iid] = phash(imaging.open_rgb(p))
    reps: list[tuple[str, object]] = []
    out = {}
    for iid, h in hashes.items():
        for rid, rh in reps:
            if h - rh <= max_distance:
                out[iid] = rid
                break
        else:
            reps.append((iid, h))
            out[iid] = iid
    return out

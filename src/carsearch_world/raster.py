"""Vectorised (numpy) z-buffer triangle rasterizer.

Every triangle's screen bounding box is expanded into candidate pixels with `np.repeat`, edge
functions select the covered pixel centres, and a `maximum.at` scatter on 1/z keeps the nearest
fragment per pixel. Barycentrics are then made perspective-correct for the winners only, so
attribute interpolation (UV, normals, positions) costs O(pixels) not O(candidates).

Bit-exact on any machine: only elementwise IEEE arithmetic (no BLAS/matmul, no libm/SIMD
transcendentals: camera trigonometry and 3x3 products go through `xmath`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carsearch.core import xmath


@dataclass
class Camera:
    """Pinhole camera. World->camera: x_cam = R @ (p - pos); camera x right, y down, z forward."""

    pos: np.ndarray  # (3,)
    R: np.ndarray  # (3,3) rows = right, down, forward in world coords
    f: float  # focal length in pixels
    width: int
    height: int
    near: float = 0.05

    @staticmethod
    def look_at(
        pos, target, fov_deg: float, width: int, height: int, roll_deg: float = 0.0, up=(0.0, 0.0, 1.0)
    ) -> "Camera":
        pos = np.asarray(pos, float)
        fwd = np.asarray(target, float) - pos
        fwd /= xmath.vnorm(fwd)
        right = np.cross(fwd, np.asarray(up, float))
        if xmath.vnorm(right) < 1e-6:
            right = np.cross(fwd, np.array([1.0, 0.0, 0.0]))
        right /= xmath.vnorm(right)
        down = np.cross(fwd, right)
        if roll_deg:
            a = xmath.radians(float(roll_deg))
            ca, sa = xmath.cos(a), xmath.sin(a)
            right, down = ca * right + sa * down, -sa * right + ca * down
        f = 0.5 * width / xmath.tan(xmath.radians(float(fov_deg)) / 2)
        return Camera(pos, np.stack([right, down, fwd]), float(f), width, height)

    def to_cam(self, p: np.ndarray) -> np.ndarray:
        return xmath.mat_rows(p - self.pos, self.R)  # (p - pos) @ R.T without BLAS

    def project(self, pc: np.ndarray) -> np.ndarray:
        """Camera-space points (...,3) -> pixel coords (...,2) (pixel centres at i+0.5)."""
        z = pc[..., 2]
        return np.stack([self.f * pc[..., 0] / z + self.width / 2, self.f * pc[..., 1] / z + self.height / 2], -1)

    def rays(self) -> np.ndarray:
        """World-space (unnormalised) ray direction per pixel centre, (H,W,3)."""
        xs = (np.arange(self.width) + 0.5 - self.width / 2) / self.f
        ys = (np.arange(self.height) + 0.5 - self.height / 2) / self.f
        r, d, fw = self.R
        return fw[None, None, :] + xs[None, :, None] * r[None, None, :] + ys[:, None, None] * d[None, None, :]


@dataclass
class Fragments:
    """Winning fragment per pixel. tri == -1 where nothing was drawn."""

    tri: np.ndarray  # (H,W) int32
    bary: np.ndarray  # (H,W,3) float32 perspective-correct barycentrics (0 where empty)
    depth: np.ndarray  # (H,W) float32 camera z (inf where empty)


def rasterize(
    pos_cam: np.ndarray, width: int, height: int, f: float, near: float = 0.05, max_candidates: int = 3_000_000
) -> Fragments:
    """Rasterize a camera-space triangle soup (T,3,3); returns per-pixel fragments.

    Triangles with a corner closer than `near` are dropped (the scenes keep the camera clear
    of the geometry). Both windings are drawn (no back-face culling).
    """
    H, W = height, width
    T = pos_cam.shape[0]
    tri_out = np.full(H * W, -1, np.int32)
    zbuf = np.zeros(H * W, np.float64)  # stores 1/z; 0 = empty (far)
    if T == 0:
        return Fragments(tri_out.reshape(H, W), np.zeros((H, W, 3), np.float32), np.full((H, W), np.inf, np.float32))
    z = pos_cam[:, :, 2].astype(np.float64)
    ok = (z > near).all(1)
    zs = np.where(ok[:, None], z, 1.0)
    sx = f * pos_cam[:, :, 0] / zs + W / 2
    sy = f * pos_cam[:, :, 1] / zs + H / 2
    x0 = np.ceil(sx.min(1) - 0.5)
    x1 = np.floor(sx.max(1) - 0.5)
    y0 = np.ceil(sy.min(1) - 0.5)
    y1 = np.floor(sy.max(1) - 0.5)
    x0 = np.clip(x0, 0, W - 1)
    x1 = np.clip(x1, -1, W - 1)
    y0 = np.clip(y0, 0, H - 1)
    y1 = np.clip(y1, -1, H - 1)
    bw = x1 - x0 + 1
    bh = y1 - y0 + 1
    area = (sx[:, 1] - sx[:, 0]) * (sy[:, 2] - sy[:, 0]) - (sx[:, 2] - sx[:, 0]) * (sy[:, 1] - sy[:, 0])
    ok &= (bw > 0) & (bh > 0) & (np.abs(area) > 1e-12)
    ok &= (sx.max(1) > -W) & (sx.min(1) < 2 * W) & (sy.max(1) > -H) & (sy.min(1) < 2 * H)
    idx = np.nonzero(ok)[0]
    if idx.size == 0:
        return Fragments(tri_out.reshape(H, W), np.zeros((H, W, 3), np.float32), np.full((H, W), np.inf, np.float32))
    sx, sy, z, area = sx[idx], sy[idx], z[idx], area[idx]
    x0, y0 = x0[idx].astype(np.int64), y0[idx].astype(np.int64)
    bw, bh = bw[idx].astype(np.int64), bh[idx].astype(np.int64)
    inv_a = 1.0 / area
    # screen-affine edge functions: w_k(px,py) = A_k px + B_k py + C_k ; w0 + w1 + w2 = 1
    A0 = (sy[:, 1] - sy[:, 2]) * inv_a
    B0 = (sx[:, 2] - sx[:, 1]) * inv_a
    C0 = (sx[:, 1] * sy[:, 2] - sx[:, 2] * sy[:, 1]) * inv_a
    A1 = (sy[:, 2] - sy[:, 0]) * inv_a
    B1 = (sx[:, 0] - sx[:, 2]) * inv_a
    C1 = (sx[:, 2] * sy[:, 0] - sx[:, 0] * sy[:, 2]) * inv_a
    iz = 1.0 / z  # (t,3) 1/z is affine in screen space
    Az = A0 * (iz[:, 0] - iz[:, 2]) + A1 * (iz[:, 1] - iz[:, 2])
    Bz = B0 * (iz[:, 0] - iz[:, 2]) + B1 * (iz[:, 1] - iz[:, 2])
    Cz = C0 * (iz[:, 0] - iz[:, 2]) + C1 * (iz[:, 1] - iz[:, 2]) + iz[:, 2]

    # scanline spans: for each (triangle, row) the exact pixel-centre x-range inside all three
    # edges, so only covered pixels are ever generated
    A2, B2, C2 = -A0 - A1, -B0 - B1, 1.0 - C0 - C1
    counts = bh
    cum = np.cumsum(counts * bw)
    start = 0
    while start < idx.size:
        base = cum[start - 1] if start else 0
        stop = int(np.searchsorted(cum, base + max_candidates, side="right"))
        stop = max(stop, start + 1)
        c = counts[start:stop]
        nrow = int(c.sum())
        rt = np.repeat(np.arange(start, stop), c)
        ry = y0[rt] + (np.arange(nrow) - np.repeat(np.cumsum(c) - c, c))
        yc = ry + 0.5
        lo = x0[rt].astype(np.float64) + 0.5
        hi = (x0[rt] + bw[rt] - 1).astype(np.float64) + 0.5
        with np.errstate(divide="ignore", invalid="ignore"):
            for A, B, C in ((A0, B0, C0), (A1, B1, C1), (A2, B2, C2)):
                a = A[rt]
                cc = B[rt] * yc + C[rt] + 1e-9  # w(x) = a*x + cc >= 0
                xb = -cc / a
                lo = np.where(a > 0, np.maximum(lo, xb), lo)
                hi = np.where(a < 0, np.minimum(hi, xb), hi)
                hi = np.where((a == 0) & (cc < 0), -1.0, hi)
        xs = np.ceil(lo - 0.5).astype(np.int64)
        xe = np.floor(hi - 0.5).astype(np.int64)
        span = np.maximum(xe - xs + 1, 0)
        n = int(span.sum())
        if n:
            keep = span > 0
            rt, ry, xs, span = rt[keep], ry[keep], xs[keep], span[keep]
            px = np.arange(n) - np.repeat(np.cumsum(span) - span - xs, span)
            py = np.repeat(ry, span)
            izc = np.repeat(Az[rt], span) * (px + 0.5) + np.repeat(Bz[rt] * (ry + 0.5) + Cz[rt], span)
            pix = py * W + px
            np.maximum.at(zbuf, pix, izc)
            win = izc >= zbuf[pix]
            tri_out[pix[win]] = np.repeat(rt, span)[win]  # ties: last write wins (deterministic)
        start = stop

    # winners: perspective-correct barycentrics
    bary = np.zeros((H * W, 3), np.float32)
    depth = np.full(H * W, np.inf, np.float32)
    m = tri_out >= 0
    pix = np.nonzero(m)[0]
    t = tri_out[pix]
    fx = (pix % W) + 0.5
    fy = (pix // W) + 0.5
    w0 = A0[t] * fx + B0[t] * fy + C0[t]
    w1 = A1[t] * fx + B1[t] * fy + C1[t]
    w2 = 1.0 - w0 - w1
    p0, p1, p2 = w0 * iz[t, 0], w1 * iz[t, 1], w2 * iz[t, 2]
    s = p0 + p1 + p2
    s = np.where(np.abs(s) < 1e-12, 1e-12, s)
    bary[pix] = np.clip(np.stack([p0 / s, p1 / s, p2 / s], 1), 0.0, 1.0)
    depth[pix] = 1.0 / s
    tri_out[pix] = idx[t]  # back to original triangle numbering
    return Fragments(tri_out.reshape(H, W), bary.reshape(H, W, 3), depth.reshape(H, W))


def interpolate(frag: Fragments, attr: np.ndarray) -> np.ndarray:
    """Interpolate per-corner attributes (T,3,k) at covered pixels -> (N,k) in row-major order of
    the covered pixels (use `frag.tri.ravel() >= 0` as the mask)."""
    tri = frag.tri.ravel()
    m = tri >= 0
    t = tri[m]
    b = frag.bary.reshape(-1, 3)[m]
    return xmath.bary3(attr[t], b)


def sample_bilinear(tex: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample an (h,w,c) texture (float32 in [0,1] or uint8) at AC3D UVs (origin bottom-left,
    wrap) -> (N,c) float32 in [0,1]."""
    h, w = tex.shape[:2]
    u = (uv[:, 0] % 1.0) * w - 0.5
    v = (1.0 - (uv[:, 1] % 1.0)) * h - 0.5
    u0 = np.floor(u)
    v0 = np.floor(v)
    fu = (u - u0)[:, None].astype(np.float32)
    fv = (v - v0)[:, None].astype(np.float32)
    u0 = u0.astype(np.int64) % w
    v0 = v0.astype(np.int64) % h
    u1 = (u0 + 1) % w
    v1 = (v0 + 1) % h
    flat = tex.reshape(h * w, -1)
    a = flat[v0 * w + u0]
    b = flat[v0 * w + u1]
    c = flat[v1 * w + u0]
    d = flat[v1 * w + u1]
    out = (a * (1 - fu) + b * fu) * (1 - fv) + (c * (1 - fu) + d * fu) * fv
    if tex.dtype == np.uint8:
        out = out * np.float32(1 / 255)
    return out.astype(np.float32, copy=False)

"""Bit-exact maths for the renderer: the same bits on every x86-64 (or any IEEE-754) machine.

The renderer's output must not depend on which BLAS kernel OpenBLAS picks (`OPENBLAS_CORETYPE`),
on numpy's SIMD dispatch (AVX2 / AVX-512 / SVML paths, `NPY_DISABLE_CPU_FEATURES`) or on which
libm variant glibc selects for the CPU (its FMA/AVX2 ifuncs). So nothing that reaches a pixel
may go through

* matmul / `@` / `np.dot` / `np.einsum` / `np.linalg.*`  (BLAS kernels and SIMD dot products
  sum in kernel-dependent orders and may fuse multiply-adds), or
* numpy's or libm's transcendental functions (`np.sin`, `np.exp`, `np.arctan2`, `x ** 0.6`,
  `math.sin`, ...), which are only "within a few ulp" and differ between SIMD paths.

Everything here is built from IEEE-754 operations that are correctly rounded by definition, and
so give the same bits whatever the vector width or instruction set: `+ - * /`, `sqrt`, `floor`,
comparisons/selection, `frexp`/`ldexp` (exact). Each numpy ufunc call is one rounded operation
(numpy never fuses a multiply and an add across ufunc calls), and the evaluation order below is
fixed by the source, so the result is a pure function of the input bits. Accuracy is a few ulp
(far below anything visible); these are not drop-in replacements for libm's last-bit accuracy,
they are replacements for its *portability*.

Functions accept Python floats or arrays; a scalar in gives a Python float out. Ranges: sin/cos/tan
are exact-reduced for |x| < 1.6e6 (Cody-Waite with a 33-bit pi/2 head), exp clamps to [-700, 700].
"""

from __future__ import annotations

import math

import numpy as np

PI = 3.141592653589793  # the double nearest pi (== math.pi)
PIO2 = 1.5707963267948966
# Cody-Waite splits (fdlibm): pi/2 = PIO2_1 + PIO2_1T (PIO2_1 has 33 significant bits, so k*PIO2_1
# is exact for |k| < 2**20), ln2 = LN2_HI + LN2_LO (LN2_HI has trailing zero bits: k*LN2_HI exact)
PIO2_1 = 1.57079632673412561417e00
PIO2_1T = 6.07710050650619224932e-11
TWO_OVER_PI = 6.36619772367581382433e-01
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e00
SQRT_HALF = 0.7071067811865476

# Taylor coefficients, highest order first (Horner); exact rationals, each rounded once to double
# (Python's int / int is correctly rounded)
_SIN = [(-1) ** k / math.factorial(2 * k + 1) for k in range(9, 0, -1)]  # r^19..r^3
_COS = [(-1) ** k / math.factorial(2 * k) for k in range(9, 0, -1)]  # r^18..r^2
_EXP = [1 / math.factorial(k) for k in range(14, 1, -1)]  # r^14..r^2
_ATANH = [1.0 / (2 * k + 1) for k in range(12, 0, -1)]  # s^24..s^2 of atanh(s)/s
_ATAN = [(-1) ** k / (2 * k + 1) for k in range(12, 0, -1)]  # a^24..a^2 of atan(a)/a


def _in(x) -> tuple[np.ndarray, bool]:
    scalar = np.ndim(x) == 0
    return np.asarray(x, dtype=np.float64), scalar


def _out(a: np.ndarray, scalar: bool):
    return float(a) if scalar else a


def _horner(coefs: list[float], z: np.ndarray) -> np.ndarray:
    acc = np.full_like(z, coefs[0])
    for c in coefs[1:]:
        acc = acc * z + c
    return acc


def _sincos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    k = np.floor(x * TWO_OVER_PI + 0.5)
    r = (x - k * PIO2_1) - k * PIO2_1T  # |r| <= pi/4 (+ tiny)
    r2 = r * r
    s = r + r * (r2 * _horner(_SIN, r2))
    c = 1.0 + r2 * _horner(_COS, r2)
    q = np.mod(k, 4.0)
    sin = np.where(q == 0, s, np.where(q == 1, c, np.where(q == 2, -s, -c)))
    cos = np.where(q == 0, c, np.where(q == 1, -s, np.where(q == 2, -c, s)))
    return sin, cos


def sin(x):
    a, sc = _in(x)
    return _out(_sincos(a)[0], sc)


def cos(x):
    a, sc = _in(x)
    return _out(_sincos(a)[1], sc)


def tan(x):
    a, sc = _in(x)
    s, c = _sincos(a)
    return _out(s / c, sc)


def radians(deg):
    a, sc = _in(deg)
    return _out(a * (PI / 180.0), sc)


def degrees(rad):
    a, sc = _in(rad)
    return _out(a * (180.0 / PI), sc)


def exp(x):
    """e**x; inputs are clamped to [-700, 700] (no overflow, no subnormal results)."""
    a, sc = _in(x)
    a = np.clip(a, -700.0, 700.0)
    k = np.floor(a * INV_LN2 + 0.5)
    r = (a - k * LN2_HI) - k * LN2_LO  # |r| <= ln2/2 (+ tiny)
    p = 1.0 + (r + r * r * _horner(_EXP, r))  # e**r, Taylor to r**14
    return _out(np.ldexp(p, k.astype(np.int64)), sc)


def log(x):
    """Natural log for x > 0 (x <= 0 gives -inf/nan like numpy)."""
    a, sc = _in(x)
    with np.errstate(divide="ignore", invalid="ignore"):
        m, e = np.frexp(a)  # a = m * 2**e, m in [0.5, 1)
        small = m < SQRT_HALF
        m = np.where(small, m * 2.0, m)
        e = (e - small.astype(e.dtype)).astype(np.float64)
        s = (m - 1.0) / (m + 1.0)  # |s| <= 0.1716
        s2 = s * s
        lm = 2.0 * s + 2.0 * s * (s2 * _horner(_ATANH, s2))
        out = e * LN2_HI + (e * LN2_LO + lm)
        out = np.where(a > 0, out, np.where(a == 0, -np.inf, np.nan))
    return _out(out, sc)


def pow(x, y: float):
    """x ** y for x >= 0 and a real exponent (0 ** y = 0 for y > 0)."""
    a, sc = _in(x)
    pos = a > 0
    v = exp(float(y) * log(np.where(pos, a, 1.0)))
    return _out(np.where(pos, v, 0.0 if y > 0 else (1.0 if y == 0 else np.inf)), sc)


def ipow(x, n: int):
    """x ** n for a non-negative integer n by repeated squaring (a fixed sequence of multiplies)."""
    a = x
    out = None
    while n:
        if n & 1:
            out = a if out is None else out * a
        n >>= 1
        if n:
            a = a * a
    return (x * 0 + 1) if out is None else out


def _atan_01(a: np.ndarray) -> np.ndarray:
    """atan(a) for 0 <= a <= 1: two half-angle reductions then the Taylor series."""
    a1 = a / (1.0 + np.sqrt(1.0 + a * a))  # <= tan(pi/8)
    a2 = a1 / (1.0 + np.sqrt(1.0 + a1 * a1))  # <= tan(pi/16) ~ 0.199
    z = a2 * a2
    return 4.0 * (a2 + a2 * (z * _horner(_ATAN, z)))


def atan(x):
    a, sc = _in(x)
    ax = np.abs(a)
    big = ax > 1.0
    with np.errstate(divide="ignore"):
        t = np.where(big, 1.0 / np.where(big, ax, 1.0), ax)
    r = _atan_01(t)
    r = np.where(big, PIO2 - r, r)
    return _out(np.where(a < 0, -r, r), sc)


def atan2(y, x):
    """Angle of (x, y) in [-pi, pi] (atan2(0, 0) = 0)."""
    yy, sy = _in(y)
    xx, sx = _in(x)
    yy, xx = np.broadcast_arrays(yy, xx)
    ax, ay = np.abs(xx), np.abs(yy)
    hi = np.maximum(ax, ay)
    lo = np.minimum(ax, ay)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(hi > 0, lo / np.where(hi > 0, hi, 1.0), 0.0)
    r = _atan_01(t)
    r = np.where(ay > ax, PIO2 - r, r)
    r = np.where(xx < 0, PI - r, r)
    r = np.where(yy < 0, -r, r)
    return _out(r, sy and sx)


def asin(x):
    a, sc = _in(x)
    a = np.clip(a, -1.0, 1.0)
    return _out(atan2(a, np.sqrt((1.0 - a) * (1.0 + a))), sc)


# ------------------------------------------------------------------ 3-vectors, fixed order
def dot3(a, b):
    """Row-wise dot product over the last axis (length 3), summed as (a0*b0 + a1*b1) + a2*b2."""
    a, b = np.asarray(a), np.asarray(b)
    return a[..., 0] * b[..., 0] + a[..., 1] * b[..., 1] + a[..., 2] * b[..., 2]


def norm3(a):
    """Euclidean length over the last axis (length 3)."""
    return np.sqrt(dot3(a, a))


def vnorm(v) -> float:
    """Length of one 3-vector as a Python float."""
    return float(norm3(np.asarray(v, np.float64)))


def mat_rows(p, M):
    """p @ M.T for points p (..., 3) and a 3x3 matrix M: each output k is dot3(p, M[k])."""
    p, M = np.asarray(p), np.asarray(M)
    return np.stack([dot3(p, M[k]) for k in range(3)], -1)


def matmul33(A, B):
    """A @ B for two 3x3 matrices."""
    return mat_rows(np.asarray(A), np.asarray(B).T)


def bary3(attr, b):
    """Barycentric interpolation: attr (N, 3, k) corners, b (N, 3) weights -> (N, k), summed in
    corner order."""
    return attr[:, 0] * b[:, 0:1] + attr[:, 1] * b[:, 1:2] + attr[:, 2] * b[:, 2:3]

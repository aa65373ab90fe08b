"""Shape designs of the everyday fleet: each body type is a family of parametric shapes, and a variant
is one seeded draw of its proportions (length, width, roof line, hood and deck heights, glass, bed/cab
split, wheel size), so two variants of one type are different "models" of the same type.

A design is in metres, x forward (0 = rear bumper, 1 = front bumper as fractions of the length), z up.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

# body type -> (model names of its variants, make names); fictional makes (no trademarks)
MAKES = ("Aster", "Norda", "Kestrel", "Velo", "Marlin", "Tamsin", "Orin", "Calder")
TYPES = ("sedan", "hatchback", "wagon", "suv", "pickup", "van", "box truck", "bus", "motorcycle", "sports car")
LIVERIES = ("taxi", "police")
# the body types a livery is painted on, and the colour it forces
LIVERY_BODIES = {"taxi": ("sedan", "wagon", "van"), "police": ("sedan", "suv", "wagon")}
LIVERY_COLOR = {"taxi": "yellow", "police": "white"}


@dataclass(frozen=True)
class Design:
    body_type: str
    variant: int
    model: str
    make: str
    length: float
    width: float
    clear: float  # body bottom above the ground
    belt: float  # beltline (window sill) height
    roof: float  # roof height
    hood: float  # hood height at the front
    deck: float  # rear deck height at the rear
    glass: tuple[float, float, float, float]  # greenhouse x: rear-bottom, rear-top, front-top, front-bottom (0..1)
    tumble: float  # roof half-width / body half-width
    pillars: tuple[float, ...]  # B/C pillars: fractions along the greenhouse's bottom edge
    wheel_r: float
    axles: tuple[float, float]  # rear, front axle x (0..1)
    bed: tuple[float, float] | None = None  # pickup bed x range (0..1), its floor at belt - 0.4
    cargo: tuple[float, float, float] | None = None  # box truck cargo box: x0, x1 (0..1), top z
    side_glass: float = 1.0  # share of the greenhouse side that is glass (panel vans: only the cab)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def design(body_type: str, variant: int) -> Design:
    """The `variant`-th shape of `body_type` (same arguments, same shape, on any machine)."""
    if body_type not in TYPES:
        raise ValueError(f"body type {body_type!r}: choose from {TYPES}")
    rng = np.random.default_rng([zlib.crc32(body_type.encode()), int(variant)])
    make = MAKES[int(rng.integers(len(MAKES)))]
    name = f"{make[:2].upper()}{int(rng.integers(1, 9))}{'abcdefgh'[variant % 8]}"
    u = lambda lo, hi: _u(rng, lo, hi)  # noqa: E731
    t = body_type
    if t == "sedan":
        L, W, belt = u(4.4, 5.0), u(1.75, 1.9), u(0.88, 0.98)
        d = dict(roof=u(1.40, 1.50), hood=belt - u(0.02, 0.1), deck=belt - u(0.0, 0.06))
        d |= dict(glass=(u(0.17, 0.24), u(0.30, 0.36), u(0.62, 0.68), u(0.70, 0.74)), pillars=(u(0.45, 0.52),))
        d |= dict(wheel_r=u(0.31, 0.34), axles=(u(0.2, 0.24), u(0.76, 0.8)))
    elif t == "hatchback":
        L, W, belt = u(3.8, 4.3), u(1.68, 1.8), u(0.9, 0.98)
        d = dict(roof=u(1.44, 1.54), hood=belt - u(0.03, 0.1), deck=belt)
        d |= dict(glass=(u(0.03, 0.05), u(0.1, 0.16), u(0.6, 0.66), u(0.7, 0.74)), pillars=(u(0.48, 0.56),))
        d |= dict(wheel_r=u(0.29, 0.32), axles=(u(0.14, 0.18), u(0.8, 0.84)))
    elif t == "wagon":
        L, W, belt = u(4.6, 5.0), u(1.78, 1.88), u(0.9, 0.98)
        d = dict(roof=u(1.45, 1.55), hood=belt - u(0.03, 0.1), deck=belt)
        d |= dict(glass=(u(0.02, 0.04), u(0.05, 0.09), u(0.62, 0.66), u(0.71, 0.74)))
        d |= dict(pillars=(u(0.3, 0.36), u(0.62, 0.68)), wheel_r=u(0.31, 0.34), axles=(u(0.18, 0.22), u(0.79, 0.82)))
    elif t == "suv":
        L, W, belt = u(4.3, 4.95), u(1.82, 1.98), u(1.08, 1.22)
        d = dict(roof=u(1.66, 1.85), hood=belt - u(0.0, 0.08), deck=belt, clear=u(0.3, 0.4))
        d |= dict(glass=(u(0.02, 0.04), u(0.05, 0.1), u(0.62, 0.68), u(0.72, 0.76)))
        d |= dict(pillars=(u(0.3, 0.36), u(0.62, 0.66)), wheel_r=u(0.36, 0.41), axles=(u(0.17, 0.21), u(0.8, 0.84)))
    elif t == "pickup":
        L, W, belt = u(5.2, 5.9), u(1.88, 2.02), u(1.12, 1.25)
        cab = u(0.38, 0.46)  # the bed/cab split
        d = dict(roof=u(1.8, 1.92), hood=belt - u(0.0, 0.06), deck=belt, clear=u(0.35, 0.45))
        d |= dict(glass=(cab, cab + u(0.02, 0.04), u(0.64, 0.68), u(0.72, 0.75)))
        d |= dict(pillars=(u(0.45, 0.55),) if cab < 0.42 else (), bed=(0.015, cab - 0.012))
        d |= dict(wheel_r=u(0.38, 0.42), axles=(u(0.17, 0.2), u(0.8, 0.84)))
    elif t == "van":  # even variants minivans, odd panel vans
        panel = variant % 2 == 1
        L, W, belt = u(4.8, 5.4), u(1.9, 2.0), u(1.0, 1.1)
        d = dict(roof=u(1.75, 1.85) if not panel else u(2.1, 2.5), hood=belt - u(0.05, 0.12), deck=belt)
        d |= dict(glass=(u(0.02, 0.03), u(0.03, 0.05), u(0.72, 0.76), u(0.8, 0.84)), clear=u(0.25, 0.32))
        d |= dict(pillars=(u(0.3, 0.38), u(0.6, 0.66)), wheel_r=u(0.32, 0.36), axles=(u(0.15, 0.18), u(0.82, 0.86)))
        d |= dict(side_glass=0.2 if panel else 1.0)
        name = f"{name} {'panel van' if panel else 'minivan'}"
    elif t == "box truck":
        L, W, belt = u(6.5, 8.0), u(2.2, 2.45), u(1.45, 1.6)
        cab = u(0.72, 0.76)
        d = dict(roof=u(2.5, 2.7), hood=belt - u(0.0, 0.1), deck=u(0.95, 1.05), clear=u(0.45, 0.55))
        d |= dict(glass=(cab, cab + 0.01, u(0.9, 0.92), u(0.94, 0.96)), pillars=())
        d |= dict(cargo=(0.0, cab - 0.01, u(3.0, 3.5)), wheel_r=u(0.45, 0.5), axles=(u(0.15, 0.22), u(0.86, 0.88)))
    elif t == "bus":
        L, W, belt = u(10.5, 12.5), u(2.45, 2.55), u(1.15, 1.3)
        n = int(rng.integers(5, 8))
        d = dict(roof=u(2.9, 3.15), hood=belt, deck=belt, clear=u(0.3, 0.4))
        d |= dict(glass=(0.01, 0.012, 0.985, 0.99), pillars=tuple((k + 1) / (n + 1) for k in range(n)))
        d |= dict(wheel_r=u(0.48, 0.52), axles=(u(0.2, 0.28), u(0.8, 0.84)))
    elif t == "sports car":
        L, W, belt = u(4.2, 4.6), u(1.85, 1.98), u(0.78, 0.86)
        d = dict(roof=u(1.15, 1.28), hood=belt - u(0.1, 0.18), deck=belt - u(0.0, 0.06), clear=u(0.14, 0.18))
        d |= dict(glass=(u(0.18, 0.26), u(0.34, 0.4), u(0.56, 0.6), u(0.66, 0.7)), pillars=())
        d |= dict(wheel_r=u(0.32, 0.35), axles=(u(0.18, 0.22), u(0.8, 0.84)))
    else:  # motorcycle
        L, W, belt = u(1.9, 2.3), u(0.7, 0.85), u(0.85, 1.0)
        d = dict(roof=u(1.55, 1.7), hood=belt, deck=belt, glass=(0.3, 0.35, 0.6, 0.65), pillars=())
        d |= dict(wheel_r=u(0.3, 0.34), axles=(0.14, 0.86), clear=0.3)
    d.setdefault("clear", u(0.18, 0.26))
    d.setdefault("tumble", u(0.82, 0.92) if t not in ("bus", "box truck", "van") else u(0.94, 0.98))
    return Design(body_type=t, variant=int(variant), model=name, make=make, length=L, width=W, belt=belt, **d)

"""Tracks against ground truth: MOTChallenge files and the CLEAR-MOT counts (Bernardin & Stiefelhagen
2008), as py-motmetrics counts them (it is not installed here; its `MOTAccumulator.update` is the
reference for the rules below).

Per frame, with IoU >= `min_iou` as the match criterion:
  1. a ground-truth object keeps the hypothesis it was last matched to (in any earlier frame) when
     both are present and still overlap enough;
  2. the remaining objects and hypotheses are matched by Hungarian assignment on 1 - IoU;
  3. a match made in step 2 whose object was last matched to a *different* hypothesis is an
     identity switch (IDSW); unmatched objects are misses (FN), unmatched hypotheses false positives.
MOTA = 1 - (FN + FP + IDSW) / number of ground-truth boxes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

Box = tuple[float, float, float, float]  # x1, y1, x2, y2
Frames = dict[int, list[tuple[int, Box]]]  # frame -> [(id, box)]


def read_mot(path: str | Path) -> Frames:
    """A MOTChallenge file (`frame,id,x,y,w,h,...`, one box a line) -> {frame: [(id, (x1, y1, x2, y2))]}."""
    out: Frames = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        f = line.split(",")
        try:
            frame, ident, x, y, w, h = int(float(f[0])), int(float(f[1])), *map(float, f[2:6])
        except (ValueError, IndexError):
            raise ValueError(f"{path}:{n}: not a MOT row 'frame,id,x,y,w,h,...': {line[:80]!r}") from None
        out.setdefault(frame, []).append((ident, (x, y, x + w, y + h)))
    return out


def iou_matrix(a: list[Box], b: list[Box]) -> np.ndarray:
    """Pairwise IoU of boxes `a` (rows) and `b` (columns)."""
    A, B = np.asarray(a, float).reshape(-1, 4), np.asarray(b, float).reshape(-1, 4)
    w = np.clip(np.minimum(A[:, None, 2], B[None, :, 2]) - np.maximum(A[:, None, 0], B[None, :, 0]), 0, None)
    h = np.clip(np.minimum(A[:, None, 3], B[None, :, 3]) - np.maximum(A[:, None, 1], B[None, :, 1]), 0, None)
    inter = w * h
    area = lambda X: (X[:, 2] - X[:, 0]) * (X[:, 3] - X[:, 1])  # noqa: E731
    union = area(A)[:, None] + area(B)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def clear_mot(gt: Frames, hyp: Frames, min_iou: float = 0.5) -> dict:
    """CLEAR-MOT counts of hypothesis tracks `hyp` against ground truth `gt` (module docstring):
    {"gt", "matches", "fp", "fn", "idsw", "mota", "objects", "hypotheses"}."""
    from scipy.optimize import linear_sum_assignment

    last: dict[int, int] = {}  # object -> the hypothesis it was last matched to
    n_gt = matches = fp = fn = idsw = 0
    hyps: set[int] = set()
    for frame in sorted(set(gt) | set(hyp)):
        g, h = gt.get(frame, []), hyp.get(frame, [])
        hyps.update(i for i, _ in h)
        n_gt += len(g)
        iou = iou_matrix([b for _, b in g], [b for _, b in h])
        free_g, free_h = set(range(len(g))), set(range(len(h)))
        for r in range(len(g)):  # 1. kept correspondences
            c = next((c for c in free_h if h[c][0] == last.get(g[r][0])), None)
            if c is not None and iou[r, c] >= min_iou:
                free_g.discard(r)
                free_h.discard(c)
                matches += 1
        rows, cols = sorted(free_g), sorted(free_h)
        if rows and cols:  # 2. the rest by Hungarian assignment
            sub = iou[np.ix_(rows, cols)]
            for i, j in zip(*linear_sum_assignment(np.where(sub >= min_iou, 1.0 - sub, 1e6))):
                if sub[i, j] < min_iou:
                    continue
                obj, hid = g[rows[i]][0], h[cols[j]][0]
                idsw += int(obj in last and last[obj] != hid)  # 3. a switch
                last[obj] = hid
                free_g.discard(rows[i])
                free_h.discard(cols[j])
                matches += 1
        fn, fp = fn + len(free_g), fp + len(free_h)
    objects = {i for f in gt.values() for i, _ in f}
    mota = 1.0 - (fn + fp + idsw) / n_gt if n_gt else float("nan")
    return dict(
        gt=n_gt, matches=matches, fp=fp, fn=fn, idsw=idsw, mota=mota, objects=len(objects), hypotheses=len(hyps)
    )

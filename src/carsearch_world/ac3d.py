"""AC3D (.ac) and TORCS .acc mesh parser.

Produces an unindexed triangle soup (per-corner positions, normals and UVs) which is what the
software rasterizer consumes. Supported: MATERIAL lines, nested OBJECT/kids hierarchies with
`loc`/`rot` transforms, `texture` (the first one of an .acc multi-texture block is the base
texture), `texrep`/`texoff`, `data` blocks, `numvert` (3 floats, or 6 with a vertex normal as in
.acc), `numsurf`/SURF with `mat` and `refs` (index + one or several UV pairs). Surface types:
0 polygon (fan-triangulated), 4 triangle strip (TORCS); line types 1/2 are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from carsearch.core import xmath
from carsearch.core.errors import CarsearchError


class AC3DError(CarsearchError, ValueError):
    """The file is not a readable AC3D mesh."""


@dataclass
class Material:
    name: str
    rgb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    amb: tuple[float, float, float] = (1.0, 1.0, 1.0)
    emis: tuple[float, float, float] = (0.0, 0.0, 0.0)
    spec: tuple[float, float, float] = (0.5, 0.5, 0.5)
    shi: float = 50.0
    trans: float = 0.0


@dataclass
class Mesh:
    """Triangle soup. T triangles; corner arrays are (T, 3, k)."""

    pos: np.ndarray  # (T,3,3) float32
    nrm: np.ndarray  # (T,3,3) float32 (unit; face normal where the file has none)
    uv: np.ndarray  # (T,3,2) float32
    mat: np.ndarray  # (T,) int32 index into materials
    tex: np.ndarray  # (T,) int32 index into textures (-1 = untextured)
    two_sided: np.ndarray  # (T,) bool
    obj: np.ndarray  # (T,) int32 index into object_names
    materials: list[Material] = field(default_factory=list)
    textures: list[str] = field(default_factory=list)
    object_names: list[str] = field(default_factory=list)

    @property
    def n_tris(self) -> int:
        return int(self.pos.shape[0])


def _floats(tokens: list[str], n: int, what: str, lineno: int) -> list[float]:
    try:
        vals = [float(t) for t in tokens[:n]]
    except ValueError as e:
        raise AC3DError(f"line {lineno}: bad number in {what}: {e}") from None
    if len(vals) < n:
        raise AC3DError(f"line {lineno}: {what} needs {n} numbers")
    return vals


def _parse_material(line: str, lineno: int) -> Material:
    q1 = line.find('"')
    q2 = line.find('"', q1 + 1)
    name = line[q1 + 1 : q2] if q1 >= 0 and q2 > q1 else ""
    toks = (line[q2 + 1 :] if q2 > 0 else line[len("MATERIAL") :]).split()
    m = Material(name)
    i = 0
    while i < len(toks):
        k = toks[i]
        if k in ("rgb", "amb", "emis", "spec"):
            setattr(m, k, tuple(_floats(toks[i + 1 : i + 4], 3, k, lineno)))
            i += 4
        elif k in ("shi", "trans"):
            setattr(m, k, _floats(toks[i + 1 : i + 2], 1, k, lineno)[0])
            i += 2
        else:
            i += 1
    return m


def _unquote(s: str) -> str:
    s = s.strip()
    if s.startswith('"'):
        end = s.find('"', 1)
        return s[1:end] if end > 0 else s[1:]
    return s.split()[0] if s else ""


def parse_ac3d(path: str | Path) -> Mesh:
    """Parse an .ac/.acc file into a triangle soup in the file's own coordinates."""
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as e:
        raise AC3DError(f"cannot read {path.name}: {e}") from None
    lines = text.splitlines()
    if not lines or not lines[0].startswith("AC3D"):
        raise AC3DError(f"{path.name}: missing AC3D header")

    materials: list[Material] = []
    textures: list[str] = []
    tex_index: dict[str, int] = {}
    object_names: list[str] = []
    out_pos: list[np.ndarray] = []
    out_nrm: list[np.ndarray] = []
    out_uv: list[np.ndarray] = []
    out_mat: list[np.ndarray] = []
    out_tex: list[np.ndarray] = []
    out_two: list[np.ndarray] = []
    out_obj: list[np.ndarray] = []

    n = len(lines)
    i = 1

    def parse_object(i: int, parent_R: np.ndarray, parent_t: np.ndarray) -> int:
        """Parse the OBJECT starting at line i (its OBJECT line); return next line index."""
        if not lines[i].startswith("OBJECT"):
            raise AC3DError(f"line {i + 1}: expected OBJECT, got {lines[i][:40]!r}")
        i += 1
        name = ""
        tex_name: str | None = None
        texrep = np.ones(2, np.float32)
        texoff = np.zeros(2, np.float32)
        R = np.eye(3)
        t = np.zeros(3)
        verts = np.zeros((0, 3))
        vnorm: np.ndarray | None = None
        surfs: list[tuple[int, int, list[int], list[tuple[float, float]]]] = []
        while i < n:
            line = lines[i].strip()
            if not line:
                i += 1
                continue
            key, _, rest = line.partition(" ")
            if key == "name":
                name = _unquote(rest)
                i += 1
            elif key == "data":
                nchar = int(rest.split()[0])
                i += 1
                consumed = 0
                while consumed < nchar and i < n:  # data may span lines
                    consumed += len(lines[i]) + 1
                    i += 1
            elif key == "texture":
                if tex_name is None:  # .acc: first texture line is the base layer
                    tex_name = _unquote(rest)
                i += 1
            elif key == "texrep":
                texrep = np.array(_floats(rest.split(), 2, "texrep", i + 1), np.float32)
                i += 1
            elif key == "texoff":
                texoff = np.array(_floats(rest.split(), 2, "texoff", i + 1), np.float32)
                i += 1
            elif key == "rot":
                R = np.array(_floats(rest.split(), 9, "rot", i + 1)).reshape(3, 3)
                i += 1
            elif key == "loc":
                t = np.array(_floats(rest.split(), 3, "loc", i + 1))
                i += 1
            elif key in ("url", "crease", "subdiv", "hidden", "locked", "folded"):
                i += 1
            elif key == "numvert":
                nv = int(rest.split()[0])
                if i + nv >= n + 1:
                    raise AC3DError(f"line {i + 1}: truncated vertex list")
                block = lines[i + 1 : i + 1 + nv]
                try:
                    rows = [list(map(float, ln.split())) for ln in block]
                except ValueError as e:
                    raise AC3DError(f"line {i + 2}: bad vertex: {e}") from None
                if nv and any(len(r) < 3 for r in rows):
                    raise AC3DError(f"line {i + 2}: vertex needs 3 coordinates")
                if nv and all(len(r) >= 6 for r in rows):
                    arr = np.array([r[:6] for r in rows])
                    verts, vnorm = arr[:, :3], arr[:, 3:6]
                else:
                    verts = np.array([r[:3] for r in rows]).reshape(-1, 3)
                    vnorm = None
                i += 1 + nv
            elif key == "numsurf":
                ns = int(rest.split()[0])
                i += 1
                for _ in range(ns):
                    while i < n and not lines[i].strip():
                        i += 1
                    if i >= n or not lines[i].startswith("SURF"):
                        raise AC3DError(f"line {i + 1}: expected SURF")
                    flags = int(lines[i].split()[1], 0)
                    i += 1
                    mat = 0
                    if lines[i].startswith("mat"):
                        mat = int(lines[i].split()[1])
                        i += 1
                    if not lines[i].startswith("refs"):
                        raise AC3DError(f"line {i + 1}: expected refs")
                    nr = int(lines[i].split()[1])
                    idx: list[int] = []
                    uvs: list[tuple[float, float]] = []
                    for ln in lines[i + 1 : i + 1 + nr]:
                        p = ln.split()
                        try:
                            idx.append(int(p[0]))
                            uvs.append((float(p[1]), float(p[2])) if len(p) >= 3 else (0.0, 0.0))
                        except (ValueError, IndexError):
                            raise AC3DError(f"line {i + 2}: bad surface ref {ln[:40]!r}") from None
                    if len(idx) != nr:
                        raise AC3DError(f"line {i + 1}: truncated refs")
                    i += 1 + nr
                    surfs.append((flags, mat, idx, uvs))
            elif key == "kids":
                nk = int(rest.split()[0])
                i += 1
                Rw = xmath.matmul33(parent_R, R)  # exact 3x3 products (no BLAS)
                tw = xmath.mat_rows(t, parent_R) + parent_t
                _emit(name, tex_name, texrep, texoff, verts, vnorm, surfs, Rw, tw)
                for _ in range(nk):
                    while i < n and not lines[i].strip():
                        i += 1
                    if i >= n:
                        raise AC3DError(f"{path.name}: file ends inside object {name!r}")
                    i = parse_object(i, Rw, tw)
                return i
            elif key == "OBJECT":
                raise AC3DError(f"line {i + 1}: OBJECT before 'kids' of {name!r}")
            else:
                i += 1  # unknown token: ignore (forward compatible)
        # EOF without kids line: accept what we have
        _emit(
            name,
            tex_name,
            texrep,
            texoff,
            verts,
            vnorm,
            surfs,
            xmath.matmul33(parent_R, R),
            xmath.mat_rows(t, parent_R) + parent_t,
        )
        return i

    def _emit(name, tex_name, texrep, texoff, verts, vnorm, surfs, Rw, tw):
        if not surfs:
            return
        nv = len(verts)
        tris_i: list[tuple[int, int, int]] = []
        tris_uv: list[tuple] = []
        tris_mat: list[int] = []
        tris_two: list[bool] = []
        for flags, mat, idx, uvs in surfs:
            kind = flags & 0x0F
            if kind in (1, 2) or len(idx) < 3:
                continue
            if max(idx) >= nv or min(idx) < 0:
                raise AC3DError(f"object {name!r}: vertex index out of range ({max(idx)} >= {nv})")
            if kind == 4:  # triangle strip
                corners = [(k, k + 1, k + 2) if k % 2 == 0 else (k + 1, k, k + 2) for k in range(len(idx) - 2)]
            else:  # polygon: fan
                corners = [(0, k, k + 1) for k in range(1, len(idx) - 1)]
            for a, b, c in corners:
                tris_i.append((idx[a], idx[b], idx[c]))
                tris_uv.append((uvs[a], uvs[b], uvs[c]))
                tris_mat.append(mat)
                tris_two.append(bool(flags & 0x20))
        if not tris_i:
            return
        ti = np.array(tris_i, np.int64)
        V = xmath.mat_rows(verts, Rw) + tw
        P = V[ti]  # (T,3,3)
        fn = np.cross(P[:, 1] - P[:, 0], P[:, 2] - P[:, 0])
        fl = xmath.norm3(fn)[:, None]
        keep = fl[:, 0] > 1e-12
        fn = fn / np.maximum(fl, 1e-12)
        if vnorm is not None:
            VN = xmath.mat_rows(vnorm, Rw)
            N = VN[ti]
            ln = xmath.norm3(N)[..., None]
            N = np.where(ln > 1e-6, N / np.maximum(ln, 1e-6), fn[:, None, :])
        else:
            N = np.repeat(fn[:, None, :], 3, axis=1)
        UV = np.array(tris_uv, np.float32) * texrep + texoff
        if tex_name is not None:
            if tex_name not in tex_index:
                tex_index[tex_name] = len(textures)
                textures.append(tex_name)
            tid = tex_index[tex_name]
        else:
            tid = -1
        object_names.append(name)
        T = int(keep.sum())
        out_pos.append(P[keep].astype(np.float32))
        out_nrm.append(N[keep].astype(np.float32))
        out_uv.append(UV[keep])
        out_mat.append(np.array(tris_mat, np.int32)[keep])
        out_tex.append(np.full(T, tid, np.int32))
        out_two.append(np.array(tris_two, bool)[keep])
        out_obj.append(np.full(T, len(object_names) - 1, np.int32))

    try:
        while i < n:
            line = lines[i]
            if line.startswith("MATERIAL"):
                materials.append(_parse_material(line, i + 1))
                i += 1
            elif line.startswith("OBJECT"):
                i = parse_object(i, np.eye(3), np.zeros(3))
            else:
                i += 1
    except (IndexError, ValueError) as e:
        if isinstance(e, AC3DError):
            raise
        raise AC3DError(f"{path.name}: malformed near line {i + 1}: {e}") from None

    if not out_pos:
        raise AC3DError(f"{path.name}: no triangles")
    mat = np.concatenate(out_mat)
    if materials and mat.max() >= len(materials):
        raise AC3DError(f"{path.name}: material index {mat.max()} out of range")
    return Mesh(
        pos=np.concatenate(out_pos),
        nrm=np.concatenate(out_nrm),
        uv=np.concatenate(out_uv).astype(np.float32),
        mat=mat,
        tex=np.concatenate(out_tex),
        two_sided=np.concatenate(out_two),
        obj=np.concatenate(out_obj),
        materials=materials or [Material("default")],
        textures=textures,
        object_names=object_names,
    )

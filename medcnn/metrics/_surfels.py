"""Surface elements ("surfels") of a binary mask from its 2x2x2 neighbourhood codes.

Definition (the one used by DeepMind's ``surface-distance`` package, rebuilt here from its
geometric description rather than from its lookup table):

* The surface lives on the lattice of voxel *corners*. Each lattice point sees the 8 voxels
  around it (a 2x2x2 neighbourhood); which of them are inside the mask is an 8-bit
  *neighbourhood code*. Points whose code is neither 0 (all outside) nor 255 (all inside)
  are *surface points*.
* The piece of surface in a neighbourhood is the marching-cubes iso-surface at level 0.5 of
  the 8 voxel-centre values (0/1), so its vertices are the midpoints of the cube edges whose
  end points differ. On a face with two diagonally opposite inside corners (an ambiguous
  face) the inside corners are kept apart when at most 4 corners are inside and the
  outside corners are kept apart otherwise (so a code and its complement share a surface).
* The crossing points are chained face by face into closed polygons. Planar polygons have
  one area whatever the triangulation; non-planar ones (pentagons and "zig-zag" hexagons)
  are split into the triangulation with the largest total area, ties broken by the largest
  single triangle. With this rule the surfel areas equal the DeepMind table for all 256
  codes and any spacing (tested in ``tests/test_metrics_surface.py``).
* For voxel spacing ``(s0, s1, s2)`` mm, a triangle with area vector ``n`` on the unit
  cube has area ``|(s1*s2*n0, s0*s2*n1, s0*s1*n2)|`` mm^2 (area vectors scale by the
  cofactor matrix of ``diag(s)``). The area of a code is the sum over its triangles.

Bit convention here: voxel ``(a, b, c)`` of the 2x2x2 neighbourhood (offsets along array
axes 0, 1, 2) contributes bit ``4*a + 2*b + c``.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache
from typing import Sequence

import numpy as np

__all__ = ["neighbour_codes", "surfel_area_table", "corner_bit"]

_CORNERS: tuple[tuple[int, int, int], ...] = tuple(itertools.product((0, 1), repeat=3))


def corner_bit(a: int, b: int, c: int) -> int:
    """Bit index of neighbourhood voxel ``(a, b, c)`` in a neighbourhood code."""
    return 4 * a + 2 * b + c


def _faces() -> list[list[tuple[int, int, int]]]:
    """The 6 cube faces, each as its 4 corners in cyclic order."""
    faces = []
    for axis in range(3):
        u, v = (ax for ax in range(3) if ax != axis)
        for value in (0, 1):
            cyc = []
            for du, dv in ((0, 0), (1, 0), (1, 1), (0, 1)):
                p = [0, 0, 0]
                p[axis], p[u], p[v] = value, du, dv
                cyc.append(tuple(p))
            faces.append(cyc)
    return faces


_FACES = _faces()


def _midpoint(p: Sequence[int], q: Sequence[int]) -> tuple[float, float, float]:
    return tuple((x + y) / 2.0 for x, y in zip(p, q))  # type: ignore[return-value]


def _polygons(code: int) -> list[list[tuple[float, float, float]]]:
    """Closed iso-surface polygons (vertex lists) of one neighbourhood code."""
    inside = {c for c in _CORNERS if code >> corner_bit(*c) & 1}
    separate_inside = len(inside) <= 4
    adjacency: dict[tuple, list[tuple]] = {}

    def link(p: tuple, q: tuple) -> None:
        adjacency.setdefault(p, []).append(q)
        adjacency.setdefault(q, []).append(p)

    for cyc in _FACES:
        edges = [(cyc[i], cyc[(i + 1) % 4]) for i in range(4)]
        crossing = [i for i, (p, q) in enumerate(edges) if (p in inside) != (q in inside)]
        if len(crossing) == 2:
            link(_midpoint(*edges[crossing[0]]), _midpoint(*edges[crossing[1]]))
        elif len(crossing) == 4:  # ambiguous face: cut off each corner of the minority side
            for i in range(4):
                if (cyc[i] in inside) == separate_inside:
                    link(_midpoint(*edges[(i - 1) % 4]), _midpoint(*edges[i]))
    polygons, seen = [], set()
    for start in adjacency:
        if start in seen:
            continue
        poly, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = [x for x in adjacency[cur] if x != prev and x not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            poly.append(cur)
            seen.add(cur)
        polygons.append(poly)
    return polygons


def _triangulations(idx: tuple[int, ...]):
    """All triangulations of the convex-position polygon with vertex ids ``idx`` (in order)."""
    if len(idx) < 3:
        yield []
        return
    first, last = idx[0], idx[-1]
    for k in range(1, len(idx) - 1):
        for left in _triangulations(idx[: k + 1]):
            for right in _triangulations(idx[k:]):
                yield left + right + [(first, idx[k], last)]


def _area_vector(p: Sequence[float], q: Sequence[float], r: Sequence[float]) -> tuple[float, float, float]:
    """Half the cross product (q - p) x (r - p): the triangle's area vector."""
    u0, u1, u2 = q[0] - p[0], q[1] - p[1], q[2] - p[2]
    v0, v1, v2 = r[0] - p[0], r[1] - p[1], r[2] - p[2]
    return (0.5 * (u1 * v2 - u2 * v1), 0.5 * (u2 * v0 - u0 * v2), 0.5 * (u0 * v1 - u1 * v0))


def _norm(v: Sequence[float]) -> float:
    return math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])


@lru_cache(maxsize=1)
def _unit_area_vectors() -> tuple[np.ndarray, ...]:
    """Per code, an ``(n_triangles, 3)`` array of triangle area vectors on the unit cube."""
    table = []
    for code in range(256):
        vectors: list[tuple[float, float, float]] = []
        for poly in _polygons(code):
            best, best_score = None, None
            for tri in _triangulations(tuple(range(len(poly)))):
                vecs = [_area_vector(poly[i], poly[j], poly[k]) for i, j, k in tri]
                norms = [_norm(v) for v in vecs]
                score = (round(sum(norms), 9), round(max(norms), 9))
                if best_score is None or score > best_score:
                    best, best_score = vecs, score
            vectors.extend(best or [])
        table.append(np.asarray(vectors, dtype=np.float64).reshape(-1, 3))
    return tuple(table)


@lru_cache(maxsize=64)
def _area_table_cached(spacing: tuple[float, float, float]) -> np.ndarray:
    s0, s1, s2 = spacing
    scale = np.array([s1 * s2, s0 * s2, s0 * s1])
    out = np.zeros(256, dtype=np.float64)
    for code, vecs in enumerate(_unit_area_vectors()):
        if len(vecs):
            out[code] = float(np.linalg.norm(vecs * scale, axis=1).sum())
    out.setflags(write=False)
    return out


def surfel_area_table(spacing_mm: Sequence[float]) -> np.ndarray:
    """Surface area in mm^2 of each of the 256 neighbourhood codes for a voxel spacing.

    Args:
        spacing_mm: voxel size along array axes 0, 1, 2 in mm.

    Returns:
        Read-only float64 array of shape (256,); codes 0 and 255 have area 0.
    """
    return _area_table_cached(tuple(float(s) for s in spacing_mm))  # type: ignore[arg-type]


def neighbour_codes(mask: np.ndarray) -> np.ndarray:
    """Neighbourhood codes on the corner lattice of a boolean mask.

    Args:
        mask: ``(n0, n1, n2)`` bool array; voxels outside the array count as outside.

    Returns:
        ``(n0 + 1, n1 + 1, n2 + 1)`` uint8 array. Entry ``[i, j, k]`` is the code of the
        lattice point at the shared corner of voxels ``[i-1:i+1, j-1:j+1, k-1:k+1]``, i.e.
        at voxel index ``(i - 0.5, j - 0.5, k - 0.5)``.
    """
    padded = np.pad(np.asarray(mask, dtype=np.uint8), 1)
    m0, m1, m2 = (s - 1 for s in padded.shape)
    codes = np.zeros((m0, m1, m2), dtype=np.uint8)
    for a, b, c in _CORNERS:
        codes |= padded[a:a + m0, b:b + m1, c:c + m2] << np.uint8(corner_bit(a, b, c))
    return codes

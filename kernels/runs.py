"""Run-based connected components of one chunk (numba, releases the GIL).

A chunk is cut into *runs*: maximal segments of equal nonzero value along x.
Runs are united with the runs of the previous row and of the previous plane
whose x-extent they touch (grown by one voxel where the connectivity allows a
diagonal step), so the union-find works on runs, not voxels: on connectomics
labels a run is about as long as a neurite is wide, which makes this several
times faster than a voxel-by-voxel scan. Each component's root is its first run,
so labels ``1..n`` follow the raster order of each component's first voxel,
like ``cc3d.connected_components``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from .volume import _find

__all__ = ["Runs", "encode_runs", "label_runs"]


@numba.njit(nogil=True, cache=True)
def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    nz, ny, nx = values.shape
    row = np.empty(nz * ny + 1, dtype=np.int64)
    row[0] = 0
    m = 0
    for z in range(nz):  # count first (branch-free), then fill exactly
        for y in range(ny):
            prev = values[z, y, 0]
            m += prev != 0
            for x in range(1, nx):
                v = values[z, y, x]
                m += (v != 0) & (v != prev)
                prev = v
            row[z * ny + y + 1] = m
    start = np.empty(m, dtype=np.int32)
    stop = np.empty(m, dtype=np.int32)
    k = -1
    for z in range(nz):
        for y in range(ny):
            prev = values[z, y, 0]
            if prev != 0:
                k += 1
                start[k] = 0
            for x in range(1, nx):
                v = values[z, y, x]
                if v != prev:
                    if prev != 0:
                        stop[k] = x
                    if v != 0:
                        k += 1
                        start[k] = x
                    prev = v
            if prev != 0:
                stop[k] = nx
    return start, stop, row, np.arange(m, dtype=np.int64)


@numba.njit(nogil=True, cache=True)
def _unite_rows(values: np.ndarray, start: np.ndarray, stop: np.ndarray, parent: np.ndarray,
                a0: int, a1: int, b0: int, b1: int, za: int, ya: int, zb: int, yb: int, grow: int) -> None:
    # runs a0..a1 of row (za, ya) against the earlier row (zb, yb): two pointers over sorted runs
    j = b0
    for r in range(a0, a1):
        s = start[r] - grow
        e = stop[r] + grow
        v = values[za, ya, start[r]]
        while j < b1 and stop[j] <= s:
            j += 1
        k = j
        while k < b1 and start[k] < e:
            if values[zb, yb, start[k]] == v:
                ra = _find(parent, r)
                rb = _find(parent, k)
                if ra < rb:
                    parent[rb] = ra
                elif rb < ra:
                    parent[ra] = rb
            k += 1


@numba.njit(nogil=True, cache=True)
def _unite(values: np.ndarray, start: np.ndarray, stop: np.ndarray, row: np.ndarray, parent: np.ndarray,
           order: int) -> tuple[np.ndarray, int]:
    nz, ny = values.shape[0], values.shape[1]
    g1 = 1 if order >= 2 else 0  # an in-plane or z step plus a step in x
    g2 = 1 if order == 3 else 0  # z, y and x steps together: corners (26 only)
    for z in range(nz):
        for y in range(ny):
            a0, a1 = row[z * ny + y], row[z * ny + y + 1]
            if a0 == a1:
                continue
            if y > 0:
                b = z * ny + y - 1
                _unite_rows(values, start, stop, parent, a0, a1, row[b], row[b + 1], z, y, z, y - 1, g1)
            if z > 0:
                b = (z - 1) * ny + y
                _unite_rows(values, start, stop, parent, a0, a1, row[b], row[b + 1], z, y, z - 1, y, g1)
                if order >= 2:
                    if y > 0:
                        b = (z - 1) * ny + y - 1
                        _unite_rows(values, start, stop, parent, a0, a1, row[b], row[b + 1], z, y, z - 1, y - 1, g2)
                    if y + 1 < ny:
                        b = (z - 1) * ny + y + 1
                        _unite_rows(values, start, stop, parent, a0, a1, row[b], row[b + 1], z, y, z - 1, y + 1, g2)
    m = start.shape[0]
    ids = np.empty(m, dtype=np.uint32)
    n = 0
    for r in range(m):  # roots are first runs: parents always point to smaller runs
        p = parent[r]
        if p == r:
            n += 1
            ids[r] = n
        else:
            root = p if parent[p] == p else parent[p]
            ids[r] = ids[root]
            parent[r] = root
    return ids, n


@numba.njit(nogil=True, cache=True)
def _paint(start: np.ndarray, stop: np.ndarray, row: np.ndarray, ids: np.ndarray, lut: np.ndarray,
           out: np.ndarray) -> None:
    nx = out.shape[2]
    flat = out.reshape(-1)
    for q in range(row.shape[0] - 1):  # slice stores compile to memset-like loops
        base = q * nx
        x = base
        for r in range(row[q], row[q + 1]):
            s = base + np.int64(start[r])
            e = base + np.int64(stop[r])
            flat[x:s] = 0
            flat[s:e] = lut[ids[r]]
            x = e
        flat[x:base + nx] = 0


@numba.njit(nogil=True, cache=True)
def _paint_rows(start: np.ndarray, stop: np.ndarray, row: np.ndarray, ids: np.ndarray, rows: np.ndarray,
                out: np.ndarray) -> None:
    for i in range(rows.shape[0]):
        q = rows[i]
        out[i, :] = 0
        for r in range(row[q], row[q + 1]):
            out[i, start[r]:stop[r]] = ids[r]


@numba.njit(nogil=True, cache=True)
def _row_ends(start: np.ndarray, stop: np.ndarray, row: np.ndarray, ids: np.ndarray, nx: int, last: bool,
              out: np.ndarray) -> None:
    for q in range(row.shape[0] - 1):
        out[q] = 0
        if row[q] == row[q + 1]:
            continue
        if last:
            r = row[q + 1] - 1
            if stop[r] == nx:
                out[q] = ids[r]
        elif start[row[q]] == 0:
            out[q] = ids[row[q]]


@numba.njit(nogil=True, cache=True)
def _run_ids(labels: np.ndarray, start: np.ndarray, row: np.ndarray) -> np.ndarray:
    nx = labels.shape[2]
    flat = labels.reshape(-1)
    ids = np.empty(start.shape[0], dtype=np.uint32)
    for q in range(row.shape[0] - 1):
        for r in range(row[q], row[q + 1]):
            ids[r] = flat[q * nx + start[r]]
    return ids


@dataclass(frozen=True)
class Runs:
    """A labelled chunk as runs along x: ``start``/``stop`` per run, ``row`` offsets per (z, y), ``ids``.

    On connectomics labels this is 5-10x smaller than the ``uint32`` labels and paints
    back (through any lookup table) at memory speed.
    """

    shape: tuple[int, int, int]
    start: np.ndarray
    stop: np.ndarray
    row: np.ndarray
    ids: np.ndarray
    n: int

    @property
    def nbytes(self) -> int:
        return int(self.start.nbytes + self.stop.nbytes + self.row.nbytes + self.ids.nbytes)

    def paint(self, lut: np.ndarray | None = None) -> np.ndarray:
        """The labels (``lut[label]`` where a lookup table is given; ``lut[0]`` is ignored)."""
        if lut is None:
            lut = np.arange(self.n + 1, dtype=np.uint32)
        out = np.empty(self.shape, dtype=lut.dtype)
        _paint(self.start, self.stop, self.row, self.ids, np.ascontiguousarray(lut), out)
        return out


    def face(self, axis: int, side: int) -> np.ndarray:
        """The labels of one boundary face (``side`` 0: first, 1: last along ``axis``), one voxel thick."""
        nz, ny, nx = self.shape
        if axis == 2:
            out = np.empty(nz * ny, dtype=np.uint32)
            _row_ends(self.start, self.stop, self.row, self.ids, nx, bool(side), out)
            return out.reshape(nz, ny, 1)
        if axis == 0:
            z = nz - 1 if side else 0
            rows = np.arange(z * ny, (z + 1) * ny, dtype=np.int64)
        else:
            rows = np.arange(nz, dtype=np.int64) * ny + (ny - 1 if side else 0)
        out = np.empty((len(rows), nx), dtype=np.uint32)
        _paint_rows(self.start, self.stop, self.row, self.ids, rows, out)
        return out.reshape((1, ny, nx) if axis == 0 else (nz, 1, nx))


def _shape3(a: np.ndarray) -> tuple[int, int, int]:
    return int(a.shape[0]), int(a.shape[1]), int(a.shape[2])


def label_runs(values: np.ndarray, connectivity: int) -> Runs:
    """Label the contiguous integer chunk ``values`` (neighbours connect when their values are equal).

    Pass ``values != 0`` as ``uint8`` for binary labelling. Labels ``1..n`` follow the
    raster order of each component's first voxel, as ``cc3d``'s do.
    """
    order = {6: 1, 18: 2, 26: 3}[connectivity]
    start, stop, row, parent = _runs(values)
    ids, n = _unite(values, start, stop, row, parent, order)
    return Runs(_shape3(values), start, stop, row, ids, int(n))


def encode_runs(labels: np.ndarray, n: int) -> Runs:
    """The :class:`Runs` of an already labelled contiguous chunk (``labels`` ``1..n``)."""
    start, stop, row, _ = _runs(labels)
    return Runs(_shape3(labels), start, stop, row, _run_ids(labels, start, row), int(n))

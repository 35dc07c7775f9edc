"""Spike rasters as event lists with delta coding.

A boolean raster ``(time, unit)`` becomes the sorted linear indices
``t * n_units + u`` of its events, stored as an int64 array with the ``delta``
codec preset (neighbour differences, then blosc zstd): for sparse spiking the
differences are small and compress far better than the raster or its bit-packed
form. :class:`EventWriter` streams raster blocks along time in whole chunks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import zarr

__all__ = ["raster_to_events", "events_to_raster", "EventWriter", "read_raster"]


def raster_to_events(raster: np.ndarray, t0: int = 0) -> np.ndarray:
    """Sorted linear event indices ``(t0 + t) * n_units + u`` of a boolean ``(time, unit)`` raster."""
    raster = np.asarray(raster)
    if raster.ndim != 2:
        raise ValueError(f"a spike raster is (time, unit), got shape {raster.shape}")
    flat = np.flatnonzero(raster.reshape(-1))
    return flat.astype(np.int64) + np.int64(t0) * raster.shape[1]


def events_to_raster(events: np.ndarray, n_units: int, t0: int, t1: int) -> np.ndarray:
    """The boolean raster of time steps ``t0:t1`` from linear event indices."""
    out = np.zeros((t1 - t0) * n_units, bool)
    lo, hi = np.searchsorted(events, [t0 * n_units, t1 * n_units])
    out[events[lo:hi] - t0 * n_units] = True
    return out.reshape(t1 - t0, n_units)


class EventWriter:
    """Append raster blocks ``(time, unit)``; events are written in whole chunks with the ``delta`` codec.

    The array ``name`` holds the events; its attributes hold ``n_units`` and
    ``n_steps`` (updated on each flush) so a reader knows the raster's shape.
    """

    def __init__(self, group: Any, name: str, n_units: int, *, chunk: int = 1 << 20,
                 overwrite: bool = False) -> None:
        create = group.create_array
        self.array: zarr.Array = create(name, (0,), np.int64, chunks=(chunk,), dims=("event",), codec="delta",
                                        attrs={"n_units": int(n_units), "n_steps": 0, "layout": "events"},
                                        overwrite=overwrite)
        self.n_units, self.chunk = int(n_units), int(chunk)
        self._buf: list[np.ndarray] = []
        self._held = 0
        self.steps = 0
        self.events = 0

    def append(self, raster: np.ndarray) -> None:
        """Append ``raster`` (time, unit), bool, following the steps already appended."""
        raster = np.asarray(raster)
        if raster.ndim != 2 or raster.shape[1] != self.n_units:
            raise ValueError(f"event array {self.array.name!r}: raster block has shape {raster.shape}, "
                             f"expected (time, {self.n_units})")
        ev = raster_to_events(raster, self.steps)
        self.steps += raster.shape[0]
        self._buf.append(ev)
        self._held += ev.size
        if self._held >= self.chunk:
            held = np.concatenate(self._buf)
            whole = held.size // self.chunk * self.chunk
            self._write(held[:whole])
            self._buf, self._held = [held[whole:]], held.size - whole

    def _write(self, ev: np.ndarray) -> None:
        start = self.events
        self.array.resize((start + ev.size,))
        self.array[start:start + ev.size] = ev
        self.events += ev.size

    def close(self) -> zarr.Array:
        """Write the remaining events and the final step count."""
        if self._held:
            self._write(np.concatenate(self._buf))
        self._buf, self._held = [], 0
        self.array.attrs["n_steps"] = self.steps
        return self.array


def read_raster(array: zarr.Array, t0: int = 0, t1: int | None = None) -> np.ndarray:
    """Decode steps ``t0:t1`` of an event array back to a boolean raster (reads only the chunks needed)."""
    n_units, n_steps = int(array.attrs["n_units"]), int(array.attrs["n_steps"])
    t1 = n_steps if t1 is None else t1
    if not (0 <= t0 <= t1 <= n_steps):
        raise IndexError(f"event array {array.name!r} holds steps 0:{n_steps}; asked for {t0}:{t1}")
    # chunk-wise binary search on the first element of each chunk keeps reads local
    n = array.shape[0]
    lo, hi = _bound(array, t0 * n_units, n), _bound(array, t1 * n_units, n)
    ev = np.asarray(array[lo:hi])
    return events_to_raster(ev, n_units, t0, t1)


def _bound(array: zarr.Array, value: int, n: int) -> int:
    lo, hi = 0, n
    chunk = array.chunks[0]
    while hi - lo > chunk:  # bisect on chunk starts, then within one chunk
        mid = (lo + hi) // 2 // chunk * chunk
        if mid <= lo:
            break
        if int(array[mid]) < value:
            lo = mid
        else:
            hi = mid
    part = np.asarray(array[lo:hi])
    return lo + int(np.searchsorted(part, value))


def raster_nbytes(shape: Sequence[int]) -> int:
    """Bytes of a dense bool raster of ``shape`` (for reporting ratios)."""
    return int(np.prod(shape))

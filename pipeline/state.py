"""State: named chunked arrays plus scalars, the thing a Step advances."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import dask
import dask.array as da
import numpy as np
from neurochunk.stores import CommitInfo, Dataset

from .io import commit_arrays, read_array

__all__ = ["State"]


@dataclass(frozen=True)
class State:
    """Named chunked arrays (dask or numpy) with their dimension names, plus scalars.

    Scalars hold time, step counters, RNG counters and anything else small
    that must survive a checkpoint (JSON-serialisable values only).
    """

    arrays: Mapping[str, Any]
    dims: Mapping[str, tuple[str, ...]]
    scalars: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        missing = set(self.arrays) - set(self.dims)
        if missing:
            raise ValueError(f"State arrays {sorted(missing)} have no dimension names")

    def __getitem__(self, name: str) -> Any:
        return self.arrays[name]

    def update(self, arrays: Mapping[str, Any] | None = None, **scalars: Any) -> State:
        """A new State with some arrays and scalars replaced."""
        return replace(self, arrays={**self.arrays, **(arrays or {})}, scalars={**self.scalars, **scalars})

    def persist(self, client: Any = None) -> State:
        """Persist every dask array (on the workers when a client is given)."""
        names = [n for n, a in self.arrays.items() if isinstance(a, da.Array)]
        values = [self.arrays[n] for n in names]
        done = client.persist(values) if client is not None else dask.persist(*values)
        return self.update(dict(zip(names, done, strict=True)))

    def to_xarray(self) -> Any:
        """The arrays as an ``xarray.Dataset``, the scalars as its attributes."""
        import xarray as xr

        return xr.Dataset({n: (self.dims[n], a) for n, a in self.arrays.items()}, attrs=dict(self.scalars))

    def checkpoint(self, ds: Dataset, name: str, codec: str | None = None) -> CommitInfo:
        """Commit every array and the scalars to ``ds`` atomically."""
        return commit_arrays(ds, name, {n: (a, self.dims[n]) for n, a in self.arrays.items()},
                             meta={"scalars": _jsonable(dict(self.scalars))}, codec=codec)

    @classmethod
    def restore(cls, ds: Dataset, which: str | int | None = None) -> State:
        """The State of a commit of ``ds`` (default: the latest), as lazy dask arrays."""
        info = ds.commits.latest() if which is None else ds.commits.get(which)
        if info is None:
            raise LookupError(f"dataset {ds.url} has no checkpoint to restore")
        group = ds.commits.open(info)
        arrays, dims = {}, {}
        for n, arr in group.arrays():
            arrays[n] = read_array(ds, n, group=group)
            dims[n] = tuple(arr.metadata.dimension_names or ())
        return cls(arrays, dims, dict(info.meta.get("scalars", {})))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value

"""Built-in volume filters, each a :func:`~neurochunk.pipeline.blockwise.blockwise` call with the halo it needs."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from neurochunk.kernels import volume as kv
from neurochunk.stores import Dataset

from .blockwise import blockwise, source_array

__all__ = ["gaussian", "threshold", "distance_transform", "watershed"]

Out = str | os.PathLike[str]


def gaussian(src: Any, out: Out, sigma: float | Sequence[float], *, truncate: float = 4.0, gpu: bool = False,
             **kw: Any) -> Dataset:
    """Gaussian smoothing (float32), equal to scipy's whole-volume ``gaussian_filter`` (mode ``reflect``)."""
    sig = tuple(sigma) if not np.isscalar(sigma) else float(sigma)
    kwargs: dict[str, Any] = {"sigma": sig, "truncate": truncate, **_xp(gpu)}
    return blockwise(src, kv.gaussian, out, halo=kv.gaussian_radius(sig, truncate), dtype=np.float32,
                     mode="reflect", kwargs=kwargs, desc="gaussian", **kw)


def threshold(src: Any, out: Out, level: float, *, above: bool = True, **kw: Any) -> Dataset:
    """``uint8`` mask of voxels above ``level`` (no halo)."""
    return blockwise(src, kv.threshold, out, dtype=np.uint8, labels=True, kwargs={"level": level, "above": above},
                     desc="threshold", **kw)


def distance_transform(src: Any, out: Out, max_distance: float, *, sampling: Sequence[float] | None = None,
                       gpu: bool = False, **kw: Any) -> Dataset:
    """Euclidean distance to the nearest background voxel, exact up to ``max_distance`` and capped there.

    Distances are in the units of ``sampling`` (default: the volume's voxel size, else voxels).
    Outside the volume counts as foreground, as in scipy's whole-volume transform.
    """
    if sampling is None:
        sampling = (src.attrs.get("voxel_size") if isinstance(src, Dataset) else None) or (1.0, 1.0, 1.0)
    halo = tuple(math.ceil(max_distance / float(s)) for s in sampling)
    return blockwise(src, kv.distance_transform, out, halo=halo, dtype=np.float32, mode="constant", cval=1,
                     kwargs={"max_distance": float(max_distance), "sampling": tuple(map(float, sampling)), **_xp(gpu)},
                     desc="distance transform", **kw)


def watershed(boundary: Any, markers: Any, out: Out, *, halo: int = 16, mask_level: float | None = None,
              **kw: Any) -> Dataset:
    """Seeded watershed of a boundary map from a marker volume, chunk by chunk with a halo.

    Each chunk floods its grown box from the markers inside it and keeps its
    centre, so a basin is assigned the marker that reaches it within ``halo``
    voxels of the chunk; with seeds no farther apart than the halo the result
    matches the whole-volume watershed except for ties on flat ridges.
    """
    dtype = source_array(markers).dtype
    return blockwise(boundary, kv.watershed, out, halo=halo, dtype=dtype, labels=True, extra=[markers],
                     kwargs={"mask_level": mask_level}, mode="nearest", desc="watershed", **kw)


def _xp(gpu: bool) -> dict[str, Any]:
    if not gpu:
        return {}
    return {"xp": "cupy"}

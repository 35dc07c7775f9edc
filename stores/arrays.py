"""Creating arrays with named dimensions and a recorded codec preset."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr

from .codecs import CodecPreset, parse_codec
from .schema import SchemaError

__all__ = ["create_named_array"]


def create_named_array(group: zarr.Group, where: str, name: str, shape: Sequence[int], dtype: Any, *,
                       chunks: Sequence[int], dims: Sequence[str], codec: str | CodecPreset | None = None,
                       fill_value: Any = 0, shards: Sequence[int] | None = None,
                       attrs: Mapping[str, Any] | None = None, overwrite: bool = False) -> zarr.Array:
    """Create ``name`` in ``group`` with dimension names and a codec preset.

    The preset and its error bound are recorded in the array's attributes
    (``neurochunk_codec``) so ``neurochunk info`` can show them.
    """
    if len(dims) != len(shape):
        raise SchemaError(where, f"has {len(shape)} dimensions but {len(dims)} dimension names {list(dims)}", name)
    if len(chunks) != len(shape):
        raise SchemaError(where, f"has {len(shape)} dimensions but chunks {tuple(chunks)}", name)
    if any(int(c) <= 0 for c in chunks):
        raise SchemaError(where, f"chunks {tuple(chunks)} must all be positive", name)
    preset = parse_codec(codec)
    codec_attrs = {"spec": preset.spec, "error_bound": preset.error_bound()}
    return group.create_array(
        name, shape=tuple(int(s) for s in shape), dtype=dtype, chunks=tuple(int(c) for c in chunks),
        shards=tuple(int(s) for s in shards) if shards else None, dimension_names=list(dims),
        fill_value=fill_value, overwrite=overwrite,
        attributes={**dict(attrs or {}), "neurochunk_codec": codec_attrs},
        **preset.zarr_kwargs(np.dtype(dtype)),
    )

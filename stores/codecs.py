"""Codec presets: lossless defaults and lossy opt-ins with a stated error bound.

Every preset ends with ``crc32c`` so corruption is detected and named
(:mod:`neurochunk.stores.integrity`). A preset is named by a short string that
configs, dataset attributes and ``neurochunk info`` all use:

``lossless`` (default)  blosc zstd level 3, byte shuffle
``bitshuffle``          blosc zstd level 3, bit shuffle
``bitround:K``          keep K mantissa bits, then lossless; relative error <= 2**-K
``quantize:D``          keep D decimal digits, then lossless; absolute error <= 10**-D
``float16``             store as float16, then lossless; error <= max(2**-11 |x|, 2**-25) for |x| <= 65504
``packbits``            boolean rasters packed 8 per byte, then lossless
``delta``               integer differences of neighbours (sorted event lists), then lossless
``raw``                 no compression (checksum only)
``lz4``                 blosc lz4 level 5, byte shuffle: several times faster to encode than zstd, larger
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from zarr.codecs import BloscCodec, Crc32cCodec

__all__ = ["CodecPreset", "parse_codec", "PRESETS"]

PRESETS = ("lossless", "bitshuffle", "bitround", "quantize", "float16", "packbits", "delta", "raw", "lz4")


@dataclass(frozen=True)
class CodecPreset:
    """A named codec chain and the error it may introduce."""

    name: str
    param: int | None = None

    @property
    def spec(self) -> str:
        return self.name if self.param is None else f"{self.name}:{self.param}"

    @property
    def lossy(self) -> bool:
        return self.name in ("bitround", "quantize", "float16")

    def error_bound(self) -> dict[str, Any]:
        """The stated bound: ``{"relative": r}``, ``{"absolute": a}``, both, or ``{}`` for lossless.

        With both keys the error of a value ``x`` is at most ``max(r * |x|, a)``.
        """
        if self.name == "bitround":
            return {"relative": 2.0 ** -int(self.param or 0)}
        if self.name == "quantize":
            return {"absolute": 10.0 ** -int(self.param or 0)}
        if self.name == "float16":  # below float16's normal range the error is half a subnormal step
            return {"relative": 2.0**-11, "absolute": 2.0**-25}
        return {}

    def zarr_kwargs(self, dtype: np.dtype[Any]) -> dict[str, Any]:
        """``filters`` and ``compressors`` for ``zarr.create_array``."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr")
            return self._zarr_kwargs(np.dtype(dtype))

    def _zarr_kwargs(self, dtype: np.dtype[Any]) -> dict[str, Any]:
        from zarr import codecs as zc

        shuffle = "bitshuffle" if self.name in ("bitshuffle", "packbits") else "shuffle"
        cname, clevel = ("lz4", 5) if self.name == "lz4" else ("zstd", 3)
        blosc = BloscCodec(cname=cname, clevel=clevel, shuffle=shuffle, typesize=max(np.dtype(dtype).itemsize, 1))
        compressors: list[Any] = [blosc, Crc32cCodec()]
        filters: list[Any] = []
        dtype = np.dtype(dtype)
        if self.lossy and dtype.kind != "f":
            raise ValueError(f"lossy codec {self.spec!r} needs a float array, not {dtype}")
        if self.name == "bitround":
            filters = [zc.BitRound(keepbits=int(self.param or 0))]
        elif self.name == "quantize":
            filters = [zc.Quantize(digits=int(self.param or 0), dtype=dtype.str)]
        elif self.name == "float16":
            filters = [zc.AsType(encode_dtype="<f2", decode_dtype=dtype.str)]
        elif self.name == "packbits":
            if dtype != np.bool_:
                raise ValueError(f"codec 'packbits' needs a bool array, not {dtype}")
            filters = [zc.PackBits()]
        elif self.name == "delta":
            if dtype.kind not in "iu":
                raise ValueError(f"codec 'delta' needs an integer array, not {dtype}")
            filters = [zc.Delta(dtype=dtype.str)]
        elif self.name == "raw":
            compressors = [Crc32cCodec()]
        return {"filters": filters, "compressors": compressors}


def parse_codec(spec: str | CodecPreset | None) -> CodecPreset:
    """Parse ``"bitround:7"`` and friends; ``None`` is the lossless default."""
    if spec is None:
        return CodecPreset("lossless")
    if isinstance(spec, CodecPreset):
        return spec
    name, _, param = str(spec).partition(":")
    name = name.strip().lower()
    if name not in PRESETS:
        raise ValueError(f"unknown codec {spec!r}: choose one of {', '.join(PRESETS)}")
    needs_param = name in ("bitround", "quantize")
    if needs_param and not param:
        raise ValueError(f"codec {name!r} needs a parameter, e.g. '{name}:7'")
    if param and not needs_param:
        raise ValueError(f"codec {name!r} takes no parameter (got {spec!r})")
    value = int(param) if param else None
    if name == "bitround" and not (0 < (value or 0) <= 52):
        raise ValueError(f"bitround keepbits must be in 1..52, got {value}")
    return CodecPreset(name, value)

"""Dataset kinds and the schema each one is checked against on open.

A dataset is a Zarr v3 group whose attributes hold a ``neurochunk`` block with
``kind`` and ``schema_version``. Each kind names the arrays it needs, their
leading dimension names and dtype kinds. Checks are plain functions over
metadata: they read no chunks.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SCHEMA_VERSION", "ArrayRule", "KindSchema", "SchemaError", "KINDS", "register_kind", "check_dataset"]

SCHEMA_VERSION = 1


class SchemaError(ValueError):
    """A dataset does not match the schema of its kind."""

    def __init__(self, dataset: str, problem: str, array: str | None = None) -> None:
        self.dataset, self.array, self.problem = dataset, array, problem
        where = f"array {array!r} of dataset {dataset}" if array else f"dataset {dataset}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class ArrayRule:
    """What one array (or every array whose name matches ``pattern``) must look like."""

    pattern: str
    dims: tuple[str, ...] = ()  # required leading dimension names
    dtype_kinds: str = ""  # allowed numpy dtype kinds ("f", "iu", "b", ...); empty = any
    required: bool = True
    ndim: int | None = None

    def matches(self, name: str) -> bool:
        return re.fullmatch(self.pattern, name) is not None


ArrayMeta = Mapping[str, Any]  # {"shape", "dtype" (numpy str), "dims"}
Check = Callable[[Mapping[str, Any], Mapping[str, ArrayMeta]], list[tuple[str | None, str]]]


@dataclass(frozen=True)
class KindSchema:
    """The schema of one dataset kind."""

    kind: str
    arrays: tuple[ArrayRule, ...] = ()
    attrs: tuple[str, ...] = ()  # required keys of the neurochunk block
    extra: tuple[Check, ...] = field(default=())
    doc: str = ""


KINDS: dict[str, KindSchema] = {}


def register_kind(schema: KindSchema) -> KindSchema:
    """Add or replace a dataset kind."""
    KINDS[schema.kind] = schema
    return schema


def _dtype_kind(dtype: str) -> str:
    import numpy as np

    return np.dtype(dtype).kind


def check_dataset(name: str, block: Mapping[str, Any], arrays: Mapping[str, ArrayMeta],
                  expect_kind: str | None = None) -> KindSchema:
    """Check a dataset's attribute block and array metadata; raise :class:`SchemaError`."""
    kind = block.get("kind")
    if kind is None:
        raise SchemaError(name, "no 'neurochunk' attribute block with a 'kind': not a neurochunk dataset")
    if expect_kind is not None and kind != expect_kind:
        raise SchemaError(name, f"is a {kind!r} dataset, not {expect_kind!r}")
    schema = KINDS.get(kind)
    if schema is None:
        raise SchemaError(name, f"unknown kind {kind!r}; known kinds: {', '.join(sorted(KINDS))}")
    version = block.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise SchemaError(name, f"schema_version {version!r} is not supported (this neurochunk reads <= {SCHEMA_VERSION})")
    for key in schema.attrs:
        if key not in block:
            raise SchemaError(name, f"the neurochunk attribute block lacks {key!r}, which a {kind} dataset needs")
    for rule in schema.arrays:
        hits = [a for a in arrays if rule.matches(a)]
        if rule.required and not hits:
            raise SchemaError(name, f"a {kind} dataset needs an array matching {rule.pattern!r}", rule.pattern)
        for a in hits:
            meta = arrays[a]
            dims = tuple(meta.get("dims") or ())
            if rule.ndim is not None and len(meta["shape"]) != rule.ndim:
                raise SchemaError(name, f"has {len(meta['shape'])} dimensions, expected {rule.ndim}", a)
            if rule.dims and dims[: len(rule.dims)] != rule.dims:
                raise SchemaError(name, f"has dimension_names {list(dims)}, expected to start with {list(rule.dims)}", a)
            if rule.dtype_kinds and _dtype_kind(meta["dtype"]) not in rule.dtype_kinds:
                raise SchemaError(name, f"has dtype {meta['dtype']}, expected a dtype of kind {rule.dtype_kinds!r}", a)
    for check in schema.extra:
        for array, problem in check(block, arrays):
            raise SchemaError(name, problem, array)
    return schema


def _check_ome(block: Mapping[str, Any], arrays: Mapping[str, ArrayMeta]) -> list[tuple[str | None, str]]:
    ome = block.get("_ome")
    if not isinstance(ome, Mapping):
        return [(None, "a volume needs OME-Zarr 'ome' attributes with 'multiscales'")]
    if str(ome.get("version")) != "0.5":
        return [(None, f"OME-Zarr version {ome.get('version')!r}; neurochunk writes and reads 0.5")]
    ms = ome.get("multiscales")
    if not isinstance(ms, list) or not ms:
        return [(None, "OME-Zarr 'multiscales' is missing or empty")]
    axes = [a.get("name") for a in ms[0].get("axes", [])]
    for level in ms[0].get("datasets", []):
        path = level.get("path")
        if path not in arrays:
            return [(path, "is listed in OME-Zarr multiscales but does not exist")]
        if len(arrays[path]["shape"]) != len(axes):
            return [(path, f"has {len(arrays[path]['shape'])} dimensions but multiscales names axes {axes}")]
    return []


def _check_csr(block: Mapping[str, Any], arrays: Mapping[str, ArrayMeta]) -> list[tuple[str | None, str]]:
    if "indices" in arrays and "weights" in arrays and arrays["indices"]["shape"] != arrays["weights"]["shape"]:
        return [("weights", f"has shape {arrays['weights']['shape']} but 'indices' has {arrays['indices']['shape']}")]
    return []


register_kind(KindSchema(
    "neuron_state",
    arrays=(ArrayRule(r"[A-Za-z_][A-Za-z0-9_]*", dims=("neuron",), required=False),),
    doc="per-neuron state variables, chunked along 'neuron'",
))
register_kind(KindSchema(
    "connectivity",
    arrays=(
        ArrayRule("indices", dims=("synapse",), dtype_kinds="iu"),
        ArrayRule("weights", dims=("synapse",), dtype_kinds="f"),
        ArrayRule("delays", dims=("synapse",), dtype_kinds="iuf", required=False),
        ArrayRule("indptr", dtype_kinds="iu"),
    ),
    attrs=("n_pre", "n_post"),
    extra=(_check_csr,),
    doc="block-sparse CSR synapses, one block per (pre chunk, post chunk)",
))
register_kind(KindSchema(
    "spikes",
    arrays=(ArrayRule("t", dims=("spike",), dtype_kinds="iuf"), ArrayRule("neuron", dims=("spike",), dtype_kinds="iu")),
    attrs=("dt",),
    doc="spike events (time, neuron id), chunked by time",
))
register_kind(KindSchema(
    "memory_bank",
    arrays=(
        ArrayRule("id", dims=("memory",), dtype_kinds="u"),
        ArrayRule("strength", dims=("memory",), dtype_kinds="f"),
        ArrayRule("count", dims=("memory",), dtype_kinds="iu", required=False),
        ArrayRule("last_step", dims=("memory",), dtype_kinds="iu", required=False),
        ArrayRule("payload", dims=("memory",), dtype_kinds="f", required=False),
    ),
    attrs=("partitions",),
    doc="scored memories in hash partitions",
))
register_kind(KindSchema(
    "volume",
    arrays=(ArrayRule(r"\d+", dims=("z", "y", "x"), ndim=3),),
    extra=(_check_ome,),
    doc="an OME-Zarr 0.5 multiscale image or label volume (z, y, x)",
))
register_kind(KindSchema(
    "activations",
    arrays=(ArrayRule(r"[A-Za-z_][A-Za-z0-9_.]*", required=False),),
    doc="activations or hidden states streamed from a model, with per-array codecs",
))
register_kind(KindSchema(
    "feature_catalog",
    arrays=(ArrayRule("atoms", dims=("atom", "unit"), dtype_kinds="f", ndim=2),
            ArrayRule("dictionary", dims=("atom",), dtype_kinds="iu"),
            ArrayRule("index", dims=("atom",), dtype_kinds="iu"),
            ArrayRule("frequency", dims=("atom",), dtype_kinds="f"),
            ArrayRule("mean_activation", dims=("atom",), dtype_kinds="f")),
    attrs=("dim", "n_atoms", "dictionaries"),
    doc="learned dictionaries (unit-norm atoms) with per-atom and per-dictionary metadata",
))

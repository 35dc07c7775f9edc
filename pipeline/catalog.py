"""A feature catalog: learned dictionaries and per-atom metadata in Zarr, queried by metadata and cosine similarity.

The catalog is a ``feature_catalog`` dataset. Atoms of every added dictionary
are rows of ``atoms`` (``(atom, unit)``, unit-normalised, chunked along atoms);
per-atom metadata are 1-D arrays (``dictionary``, ``index``, ``frequency``,
``mean_activation``); per-dictionary metadata (name, source dataset, layer,
tags) live in the attribute block, whose ``n_atoms`` is written last, so a
crashed :meth:`FeatureCatalog.add` leaves the catalog as it was. Queries are
Dask graphs over atom chunks: each chunk returns its own top-k (a small
message) and a tree reduction merges them, so memory is bounded by the chunk
size, not by the catalog's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dask
import dask.array as da
import numpy as np

from neurochunk.stores import Dataset

from .io import read_array

__all__ = ["FeatureCatalog"]

META = ("dictionary", "index", "frequency", "mean_activation")


def _topk_block(block: np.ndarray, keep: np.ndarray, queries: np.ndarray, k: int, offset: int) -> tuple[Any, Any]:
    scores = queries @ np.asarray(block, np.float32).T  # (q, atoms in block)
    scores[:, ~np.asarray(keep, bool)] = -np.inf
    kk = min(k, scores.shape[1])
    part = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
    return np.take_along_axis(scores, part, 1), part.astype(np.int64) + offset


def _merge_topk(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[np.ndarray, np.ndarray]:
    scores = np.concatenate([p[0] for p in parts], axis=1)
    ids = np.concatenate([p[1] for p in parts], axis=1)
    order = np.lexsort((ids, -scores), axis=1)[:, :k]  # best score first, ties by atom id
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


class FeatureCatalog:
    """Dictionaries and per-atom metadata, with metadata and cosine top-k queries."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds

    @classmethod
    def create(cls, url: str | os.PathLike[str], dim: int, *, chunk: int = 4096, overwrite: bool = False,
               **kwargs: Any) -> FeatureCatalog:
        """An empty catalog of ``dim``-dimensional atoms, ``chunk`` atoms per stored chunk."""
        ds = Dataset.create(url, "feature_catalog", attrs={"dim": int(dim), "n_atoms": 0, "dictionaries": []},
                            overwrite=overwrite, **kwargs)
        ds.create_array("atoms", (0, dim), np.float32, chunks=(chunk, dim), dims=("atom", "unit"))
        for name, dtype in zip(META, (np.int32, np.int32, np.float32, np.float32), strict=True):
            ds.create_array(name, (0,), dtype, chunks=(chunk,), dims=("atom",))
        return cls(ds)

    @classmethod
    def open(cls, url: str | os.PathLike[str], mode: str = "r", **kwargs: Any) -> FeatureCatalog:
        return cls(Dataset.open(url, kind="feature_catalog", mode=mode, **kwargs))

    @property
    def n_atoms(self) -> int:
        return int(self.ds.attrs["n_atoms"])

    @property
    def dictionaries(self) -> list[dict[str, Any]]:
        return list(self.ds.attrs["dictionaries"])

    def add(self, dictionary: np.ndarray, *, name: str, source: str, layer: str, tags: Sequence[str] = (),
            frequency: np.ndarray | None = None, mean_activation: np.ndarray | None = None,
            meta: Mapping[str, Any] | None = None) -> int:
        """Append a dictionary ``(K, dim)``; returns its id. Atoms are stored unit-normalised."""
        dictionary = np.asarray(dictionary, np.float32)
        dim = int(self.ds.attrs["dim"])
        if dictionary.ndim != 2 or dictionary.shape[1] != dim:
            raise ValueError(f"catalog {self.ds.url} holds {dim}-dimensional atoms; dictionary {name!r} has "
                             f"shape {dictionary.shape}")
        k = dictionary.shape[0]
        for label, v in (("frequency", frequency), ("mean_activation", mean_activation)):
            if v is not None and np.shape(v) != (k,):
                raise ValueError(f"dictionary {name!r}: {label} has shape {np.shape(v)}, expected ({k},)")
        did = len(self.dictionaries)
        start = self.n_atoms
        norms = np.linalg.norm(dictionary, axis=1, keepdims=True)
        values = {
            "atoms": dictionary / np.where(norms > 0, norms, 1),
            "dictionary": np.full(k, did, np.int32), "index": np.arange(k, dtype=np.int32),
            "frequency": np.asarray(frequency if frequency is not None else np.full(k, np.nan), np.float32),
            "mean_activation": np.asarray(mean_activation if mean_activation is not None else np.full(k, np.nan),
                                          np.float32),
        }
        for arr_name, v in values.items():  # rows past n_atoms are invisible until the attrs below
            arr = self.ds[arr_name]
            arr.resize((start + k, *arr.shape[1:]))
            arr[start:start + k] = v
        entry = {"id": did, "name": name, "source": source, "layer": layer, "tags": list(tags), "n_atoms": k,
                 "first_atom": start, **dict(meta or {})}
        self.ds.update_attrs(dictionaries=[*self.dictionaries, entry], n_atoms=start + k)
        return did

    # -- queries -----------------------------------------------------------------------
    def find_dictionaries(self, *, source: str | None = None, layer: str | None = None,
                          tags: Iterable[str] = (), name: str | None = None) -> list[int]:
        """Ids of dictionaries matching every given field (``tags``: all of them)."""
        want = set(tags)
        return [d["id"] for d in self.dictionaries
                if (source is None or d["source"] == source) and (layer is None or d["layer"] == layer)
                and (name is None or d["name"] == name) and want <= set(d["tags"])]

    def _column(self, name: str) -> da.Array:
        return read_array(self.ds, name)[: self.n_atoms]

    def mask(self, *, dictionaries: Iterable[int] | None = None, min_frequency: float | None = None,
             max_frequency: float | None = None, min_mean_activation: float | None = None) -> da.Array:
        """A lazy boolean mask over atoms from per-dictionary and per-atom conditions."""
        keep = da.ones(self.n_atoms, bool, chunks=self.ds["atoms"].chunks[0])
        if dictionaries is not None:
            keep = da.logical_and(keep, da.isin(self._column("dictionary"), np.asarray(list(dictionaries), np.int32)))
        freq = self._column("frequency")
        if min_frequency is not None:
            keep = da.logical_and(keep, freq >= min_frequency)
        if max_frequency is not None:
            keep = da.logical_and(keep, freq <= max_frequency)
        if min_mean_activation is not None:
            keep = da.logical_and(keep, self._column("mean_activation") >= min_mean_activation)
        return keep

    def select(self, **conditions: Any) -> np.ndarray:
        """Global atom ids matching :meth:`mask`'s conditions (plus ``source``/``layer``/``tags``/``name``)."""
        return np.flatnonzero(self.mask(**self._conditions(conditions)).compute())

    def _conditions(self, conditions: dict[str, Any]) -> dict[str, Any]:
        dict_fields = {k: conditions.pop(k) for k in ("source", "layer", "tags", "name") if k in conditions}
        if dict_fields:
            ids = self.find_dictionaries(**dict_fields)
            given = conditions.get("dictionaries")
            conditions["dictionaries"] = ids if given is None else sorted(set(ids) & set(given))
        return conditions

    def describe(self, atom_ids: Iterable[int]) -> list[dict[str, Any]]:
        """Metadata of some atoms: dictionary fields plus their index and statistics."""
        ids = np.asarray(list(atom_ids), np.int64)
        cols = {n: np.asarray(self.ds[n].get_coordinate_selection(ids)) if len(ids) else np.empty(0) for n in META}
        dicts = self.dictionaries
        fields = ("name", "source", "layer", "tags")
        return [{"atom": int(a), **{k: dicts[int(cols["dictionary"][i])][k] for k in fields},
                 "index": int(cols["index"][i]), "frequency": float(cols["frequency"][i]),
                 "mean_activation": float(cols["mean_activation"][i])} for i, a in enumerate(ids)]

    def topk_graph(self, queries: np.ndarray, k: int, split_every: int = 8, **conditions: Any) -> Any:
        """The lazy top-k (delayed ``(scores, atom ids)``, each ``(q, k)``); see :meth:`topk`."""
        q = np.atleast_2d(np.asarray(queries, np.float32))
        dim = int(self.ds.attrs["dim"])
        if q.shape[1] != dim:
            raise ValueError(f"queries have {q.shape[1]} dimensions; catalog {self.ds.url} holds {dim}")
        if self.n_atoms == 0:
            raise ValueError(f"catalog {self.ds.url} is empty")
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30)
        atoms = self._column("atoms").rechunk({1: -1})
        keep = self.mask(**self._conditions(dict(conditions))).rechunk(atoms.chunks[0])
        qd = dask.delayed(q, pure=True)
        task = dask.delayed(_topk_block, pure=True, nout=2)
        offsets = np.concatenate([[0], np.cumsum(atoms.chunks[0])[:-1]])
        parts = [dask.delayed(tuple)(task(a, m, qd, k, int(o)))
                 for a, m, o in zip(atoms.to_delayed().ravel(), keep.to_delayed().ravel(), offsets, strict=True)]
        merge = dask.delayed(_merge_topk, pure=True)
        while len(parts) > 1:
            parts = [merge(parts[i:i + split_every], k) for i in range(0, len(parts), split_every)]
        return merge(parts, k)

    def topk(self, queries: np.ndarray, k: int = 10, *, client: Any = None,
             **conditions: Any) -> tuple[np.ndarray, np.ndarray]:
        """Cosine-similarity top-``k`` atoms of each query ``(q, dim)``: ``(scores, atom ids)``, best first.

        ``conditions`` restrict the search like :meth:`select` (``source``, ``layer``,
        ``tags``, ``dictionaries``, ``min_frequency`` ...). Masked-out slots score ``-inf``.
        """
        g = self.topk_graph(queries, k, **conditions)
        return client.compute(g, sync=True) if client is not None else g.compute()

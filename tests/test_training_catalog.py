"""Feature catalog: metadata queries and chunked cosine top-k against brute force."""

from __future__ import annotations

import dask
import numpy as np
import pytest

from neurochunk.pipeline.catalog import FeatureCatalog
from neurochunk.stores import Dataset


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture
def catalog(tmp_path):
    cat = FeatureCatalog.create(tmp_path / "cat.zarr", dim=16, chunk=37)
    rng = np.random.default_rng(0)
    dicts = []
    for i, (source, layer, tags) in enumerate([("run-a", "layer1", ["v1"]), ("run-a", "layer2", ["v1", "late"]),
                                               ("run-b", "layer1", ["v2"])]):
        d = rng.standard_normal((100 + 20 * i, 16)).astype(np.float32) * 3
        freq = rng.random(d.shape[0]).astype(np.float32)
        cat.add(d, name=f"dict{i}", source=source, layer=layer, tags=tags, frequency=freq,
                mean_activation=freq * 2)
        dicts.append((d / np.linalg.norm(d, axis=1, keepdims=True), freq))
    return FeatureCatalog.open(tmp_path / "cat.zarr"), dicts


def test_metadata_queries(catalog):
    cat, dicts = catalog
    assert cat.n_atoms == 100 + 120 + 140 and cat.ds["atoms"].chunks == (37, 16)
    assert cat.find_dictionaries(source="run-a") == [0, 1]
    assert cat.find_dictionaries(layer="layer1") == [0, 2]
    assert cat.find_dictionaries(tags=["v1", "late"]) == [1]
    freq = np.concatenate([f for _, f in dicts])
    ids = cat.select(source="run-a", min_frequency=0.5)
    expect = np.flatnonzero((np.arange(360) < 220) & (freq >= 0.5))
    np.testing.assert_array_equal(ids, expect)
    desc = cat.describe(ids[-2:])
    assert desc[-1]["name"] == "dict1" and desc[-1]["layer"] == "layer2" and desc[-1]["atom"] == ids[-1]
    assert desc[-1]["index"] == ids[-1] - 100 and desc[-1]["frequency"] == pytest.approx(freq[ids[-1]])
    assert len(cat.select(tags=["nope"])) == 0


def test_cosine_topk_equals_brute_force(catalog):
    cat, dicts = catalog
    atoms = np.concatenate([d for d, _ in dicts])
    q = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    q[0] = atoms[123] * 7.0  # a stored atom finds itself with similarity 1
    scores, ids = cat.topk(q, k=8)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    full = qn @ atoms.T
    ref = np.argsort(-full, axis=1, kind="stable")[:, :8]
    np.testing.assert_array_equal(ids, ref)
    np.testing.assert_allclose(scores, np.take_along_axis(full, ref, 1), rtol=1e-5)
    assert ids[0, 0] == 123 and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    # restricted to run-b's layer1: only atoms 220..359 can come back
    s2, i2 = cat.topk(q, k=4, source="run-b")
    sub = full[:, 220:]
    np.testing.assert_array_equal(i2, 220 + np.argsort(-sub, axis=1, kind="stable")[:, :4])
    graph = dict(cat.topk_graph(q, 4).__dask_graph__())
    assert sum("_topk_block" in str(k) for k in graph) == 10  # one task per stored chunk of 37 atoms


def test_add_is_invisible_until_complete_and_checks_shapes(tmp_path):
    cat = FeatureCatalog.create(tmp_path / "cat.zarr", dim=4, chunk=8)
    cat.add(np.eye(4, dtype=np.float32), name="a", source="s", layer="l")
    with pytest.raises(ValueError, match="holds 4-dimensional atoms"):
        cat.add(np.ones((3, 5), np.float32), name="b", source="s", layer="l")
    with pytest.raises(ValueError, match="frequency has shape"):
        cat.add(np.ones((3, 4), np.float32), name="b", source="s", layer="l", frequency=np.ones(2))
    again = FeatureCatalog.open(tmp_path / "cat.zarr")
    assert again.n_atoms == 4 and len(again.dictionaries) == 1
    assert Dataset.open(tmp_path / "cat.zarr").kind == "feature_catalog"
    with pytest.raises(ValueError, match="queries have 3 dimensions"):
        again.topk(np.ones((1, 3)), 2)

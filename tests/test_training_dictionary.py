"""Dictionary learning: OMP against scikit-learn, objective against MiniBatchDictionaryLearning, crash and continue."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest
from sklearn.decomposition import MiniBatchDictionaryLearning
from sklearn.linear_model import orthogonal_mp_gram

from neurochunk.kernels.omp import code_stats, dense_codes, omp, sparse_code, update_dictionary
from neurochunk.pipeline.dictionary import learn_dictionary, objective, objective_terms
from neurochunk.stores import Dataset


@pytest.fixture(autouse=True)
def _threads():
    with dask.config.set(scheduler="threads"):
        yield


def _sparse_data(n: int, d: int, k: int, s: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    atoms = rng.standard_normal((k, d))
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)
    codes = np.zeros((n, k))
    for i in range(n):
        codes[i, rng.choice(k, s, replace=False)] = rng.standard_normal(s)
    return (codes @ atoms + 0.1 * rng.standard_normal((n, d))).astype(np.float32)


def _unit_rows(k: int, d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).standard_normal((k, d)).astype(np.float32)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_omp_matches_scikit_learn_and_stats_match_dense_products():
    rng = np.random.default_rng(1)
    dic = _unit_rows(96, 40, 2)
    x = rng.standard_normal((300, 40)).astype(np.float32)
    idx, val = sparse_code(x, dic, 6)
    assert idx.shape == (300, 6) and (idx >= 0).all()
    ref = orthogonal_mp_gram((dic @ dic.T).astype(np.float64), (x @ dic.T).T.astype(np.float64), n_nonzero_coefs=6).T
    c = dense_codes(idx, val, 96)
    np.testing.assert_array_equal(c != 0, ref != 0)
    np.testing.assert_allclose(c, ref, atol=1e-5)
    a, b = code_stats(x, idx, val, 96)
    np.testing.assert_allclose(a, c.T.astype(np.float64) @ c, atol=1e-4)
    np.testing.assert_allclose(b, x.T.astype(np.float64) @ c, atol=1e-4)


def test_omp_stops_early_on_exact_fit_and_update_keeps_unit_norm():
    dic = _unit_rows(20, 8, 3)
    x = (2.0 * dic[3] - 0.5 * dic[11])[None, :]
    idx, val = omp(x @ dic.T, dic @ dic.T, 5, tol=1e-6)
    assert sorted(idx[0][idx[0] >= 0]) == [3, 11]
    np.testing.assert_allclose(dense_codes(idx, val, 20)[0, [3, 11]], [2.0, -0.5], atol=1e-5)
    a = np.diag(np.r_[np.ones(19), 0.0])
    b = np.random.default_rng(0).standard_normal((8, 20))
    new, replaced = update_dictionary(dic, a, b, replacements=np.ones((1, 8)))
    np.testing.assert_allclose(np.linalg.norm(new, axis=1), 1.0, atol=1e-6)
    assert replaced == 1 and np.allclose(new[19], 1 / np.sqrt(8))


def test_objective_within_5_percent_of_scikit_learn(tmp_path):
    n, d, k, s = 3000, 24, 48, 4
    x = _sparse_data(n, d, k, s)
    xd = da.from_array(x, chunks=(400, d))
    out = Dataset.create(tmp_path / "dict.zarr", "activations")
    res = learn_dictionary(xd, out, n_atoms=k, sparsity=s, epochs=12, progress=False)
    sk = MiniBatchDictionaryLearning(n_components=k, alpha=1.0, batch_size=256, max_iter=10,
                                     transform_algorithm="omp", transform_n_nonzero_coefs=s, random_state=0).fit(x)
    ours = objective(xd, res.dictionary, s)
    theirs = objective(xd, sk.components_.astype(np.float32), s)
    # scikit-learn's own OMP transform gives the same codes, hence the same objective
    codes = sk.transform(x)
    sk_direct = (0.5 * ((x - codes @ sk.components_) ** 2).sum() + np.abs(codes).sum()) / n
    assert theirs == pytest.approx(sk_direct, rel=1e-4)
    assert ours <= 1.05 * theirs, (ours, theirs)
    ours_t, theirs_t = objective_terms(xd, res.dictionary, s), objective_terms(xd, sk.components_, s)
    assert ours_t["l0"] == theirs_t["l0"] <= s  # the same sparsity ...
    assert ours_t["error"] <= 1.05 * theirs_t["error"], (ours_t, theirs_t)  # ... and the error within 5%
    assert res.errors[-1] < res.errors[0]
    assert res.objectives[-1] < res.objectives[0]  # learning improved on the initial dictionary
    assert np.allclose(np.linalg.norm(res.dictionary, axis=1), 1.0, atol=1e-5)


def test_crash_and_continue_from_last_commit(tmp_path):
    x = da.from_array(_sparse_data(1200, 16, 24, 3, seed=4), chunks=(150, 16))
    kw = {"n_atoms": 24, "sparsity": 3, "epochs": 6, "progress": False, "seed": 2}
    whole = learn_dictionary(x, Dataset.create(tmp_path / "a.zarr", "activations"), **kw)

    def crash(it, _tot):
        if it == 3:
            raise KeyboardInterrupt("killed in iteration 3")

    out = Dataset.create(tmp_path / "b.zarr", "activations")
    with pytest.raises(KeyboardInterrupt):
        learn_dictionary(x, out, on_stats=crash, **kw)
    last = Dataset.open(tmp_path / "b.zarr").commits.latest()
    assert last.meta["iteration"] == 2 and len(Dataset.open(tmp_path / "b.zarr").commits.list()) == 3
    seen = []
    again = learn_dictionary(x, Dataset.open(tmp_path / "b.zarr", mode="r+"),
                             on_stats=lambda it, _t: seen.append(it), **kw)
    assert again.resumed_from == 3 and seen == [3, 4, 5]
    np.testing.assert_array_equal(again.dictionary, whole.dictionary)
    assert again.objectives == whole.objectives and again.errors == whole.errors
    stored = Dataset.open(tmp_path / "b.zarr").commits.open()["dictionary"][:]
    np.testing.assert_array_equal(stored, whole.dictionary)
    with pytest.raises(ValueError, match="holds a dictionary run with config"):
        learn_dictionary(x, Dataset.open(tmp_path / "b.zarr", mode="r+"), **{**kw, "n_atoms": 20})


def test_online_iterations_visit_each_chunk_once_per_epoch_and_resume_exactly(tmp_path):
    from neurochunk.pipeline.dictionary import iteration_blocks

    seen = [iteration_blocks(7, 2, 5, it) for it in range(8)]
    assert [e for e, _ in seen] == [0] * 4 + [1] * 4
    for epoch in (0, 1):
        assert sorted(sum((b for e, b in seen if e == epoch), [])) == list(range(7))
    assert [b for _, b in seen[:4]] != [b for _, b in seen[4:]]  # a new order each epoch
    x = da.from_array(_sparse_data(1200, 16, 24, 3, seed=6), chunks=(150, 16))
    kw = {"n_atoms": 24, "sparsity": 3, "epochs": 2, "progress": False, "chunks_per_iteration": 3}
    whole = learn_dictionary(x, Dataset.create(tmp_path / "a.zarr", "activations"), **kw)
    assert whole.iterations == 6 and whole.samples == 2 * 1200

    def crash(it, _tot):
        if it == 4:
            raise RuntimeError("worker lost")

    with pytest.raises(RuntimeError):
        learn_dictionary(x, Dataset.create(tmp_path / "b.zarr", "activations"), on_stats=crash, **kw)
    group = Dataset.open(tmp_path / "b.zarr").commits.open()
    assert group["A"].shape == (24, 24) and group["B"].shape == (16, 24)
    again = learn_dictionary(x, Dataset.open(tmp_path / "b.zarr", mode="r+"), **kw)
    assert again.resumed_from == 4
    np.testing.assert_array_equal(again.dictionary, whole.dictionary)


def test_objective_within_5_percent_of_scikit_learn_on_recurrent_activations(tmp_path):
    from neurochunk.kernels.recurrent import DelayedRNN, advance, empty_history, make_weights, stimulus

    model = DelayedRNN((16, 32, 32), delay_ff=5, delay_rec=3, seed=3)
    _, rec = advance(model, make_weights(model), stimulus(model, np.arange(100)), empty_history(model, 100), 0, 30,
                     record=True)
    x = rec[1].reshape(-1, 32)
    x = (x - x.mean(axis=0)).astype(np.float32)
    xd = da.from_array(x, chunks=(500, 32))
    res = learn_dictionary(xd, Dataset.create(tmp_path / "d.zarr", "activations"), n_atoms=48, sparsity=4,
                           epochs=12, progress=False)
    sk = MiniBatchDictionaryLearning(n_components=48, alpha=1.0, batch_size=256, max_iter=10,
                                     transform_algorithm="omp", transform_n_nonzero_coefs=4, random_state=0).fit(x)
    ours, theirs = objective_terms(xd, res.dictionary, 4), objective_terms(xd, sk.components_, 4)
    assert ours["error"] <= 1.05 * theirs["error"], (ours, theirs)
    assert ours["error"] + ours["l1"] <= 1.05 * (theirs["error"] + theirs["l1"]), (ours, theirs)

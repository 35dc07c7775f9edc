"""Single neurons, the keyed RNG and network descriptions."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest

from neurochunk.kernels.procedural import _skip_batch, deliver_many, materialize
from neurochunk.kernels.rng import normal_array, stream_key, uniform, uniform_array
from neurochunk.pipeline.network import Network, Population, Projection, coba_network
from neurochunk.pipeline.simulation import EMPTY_CONN, _chunk_args, _init_chunk, _window_task


def _python_key(seed: int, a: int, b: int, c: int) -> int:
    m = 2**64

    def mix(z: int) -> int:
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % m
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % m
        return z ^ (z >> 31)

    h = mix((seed + 0x9E3779B97F4A7C15) % m)
    for w in (a, b, c):
        h = mix(h ^ w)
    return h


def test_rng_matches_reference_arithmetic_and_is_uniform() -> None:
    rng = np.random.default_rng()
    for seed, a, b, c in rng.integers(0, 2**40, size=(20, 4)).tolist():
        assert int(stream_key(seed, a, b, c)) == _python_key(seed, a, b, c)
    u = uniform_array(7, 1, 2, 0, 200_000, 3)
    assert 0 < u.min() and u.max() <= 1
    assert abs(u.mean() - 0.5) < 0.003 and abs(u.var() - 1 / 12) < 0.002
    z = normal_array(7, 1, 2, 0, 200_000, 0)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    # random access: draw k of a stream does not depend on the draws before it
    key = stream_key(1, 2, 3, 4)
    assert uniform(key, 1000) == uniform(key, 1000)
    assert len({uniform(key, k) for k in range(100)}) == 100


def _single_neuron_rate(model: str, params: dict, duration_ms: float = 2000.0) -> float:
    net = Network((Population("P", 1, model, params),), dt=0.1)
    plan = net.plan()
    out = _window_task(_chunk_args(plan, 0), EMPTY_CONN, *_init_chunk(plan, 0), None, 0, int(duration_ms / 0.1))
    steps = out[5][0]
    return (len(steps) - 1) / ((steps[-1] - steps[0]) * 0.1e-3)


@pytest.mark.parametrize("drive", [22.0, 25.0, 40.0])
def test_lif_constant_drive_matches_analytic_rate(drive: float) -> None:
    tau, v_th, v_r, t_ref = 20.0, 20.0, 10.0, 2.0
    rate = _single_neuron_rate("lif_cuba_delta", {"tau_m": tau, "E_L": 0.0, "V_th": v_th, "V_reset": v_r,
                                                  "t_ref": t_ref, "RI_ext": drive})
    expected = 1e3 / (t_ref + tau * math.log((drive - v_r) / (drive - v_th)))
    # the discrete threshold crossing adds at most one step (0.1 ms) per interval
    assert expected * (1 - 0.1 / (1e3 / expected)) - 1e-9 <= rate <= expected * 1.0001


def test_coba_neuron_constant_current_matches_analytic_rate() -> None:
    # C dv/dt = gL (EL - v) + I: the LIF with R = 1/gL; Euler at dt = 0.1 ms is within 1%
    i_ext, g_l, tau = 250.0, 10.0, 20.0
    rate = _single_neuron_rate("lif_coba", {"I_ext": i_ext, "t_ref": 5.0})
    v_inf = -60.0 + i_ext / g_l
    expected = 1e3 / (5.0 + tau * math.log((v_inf + 60.0) / (v_inf + 50.0)))
    assert rate == pytest.approx(expected, rel=0.01)


def test_network_errors_name_the_field() -> None:
    pops = (Population("E", 10, "lif_coba"),)
    with pytest.raises(ValueError, match="projection 'x'.*no population 'Q'"):
        Network(pops, (Projection("x", "E", "Q", "ge", 1.0, p=0.1),)).plan()
    with pytest.raises(ValueError, match="receptor 'v' is not one of lif_coba's"):
        Network(pops, (Projection("x", "E", "E", "v", 1.0, p=0.1),)).plan()
    with pytest.raises(ValueError, match="fixed_indegree.*stored"):
        Network(pops, (Projection("x", "E", "E", "ge", 1.0, rule="fixed_indegree", k=3),)).plan()
    with pytest.raises(ValueError, match="population 'E'.*no parameter"):
        Network((Population("E", 10, "lif_coba", {"tau": 3.0}),)).plan()
    with pytest.raises(ValueError, match="weight"):
        Network(pops, (Projection("x", "E", "E", "ge", {"gamma": [1, 2]}, p=0.1),)).plan()


def test_initial_state_does_not_depend_on_chunking() -> None:
    one = coba_network(n=1000).plan()
    many = coba_network(n=1000, chunk=300).plan()
    whole = _init_chunk(one, 0)
    parts = [_init_chunk(many, c) for c in range(len(many.chunks))]
    for k in range(3):
        np.testing.assert_array_equal(whole[k], np.concatenate([p[k] for p in parts]))
    assert whole[0].dtype == np.float32 and -60 <= whole[0].min() and whole[0].max() <= -50


def test_procedural_fast_path_draws_exactly_the_generators_synapses() -> None:
    """Constant-weight fixed-probability delivery (batched approximate logs, exact ``log`` near integer
    skips) adds exactly the synapses ``materialize`` lists with the exact generator, on unaligned chunks."""
    for p, n_pre, n_post, block in ((0.02, 300, 5000, 1024), (0.3, 200, 700, 256), (0.001, 400, 60000, 16384)):
        pops = (Population("A", n_pre, "lif_cuba_delta"), Population("B", n_post, "lif_cuba_delta"))
        plan = Network(pops, (Projection("AB", "A", "B", "v", 0.5, p=p, delay=0.2),), seed=11,
                       conn_block=block).plan()
        lo, hi = n_pre + 100, n_pre + n_post - 50
        ring = np.zeros((plan.n_slots, 2, hi - lo), np.int32)
        deliver_many(np.zeros(n_pre, np.int64), np.arange(n_pre, dtype=np.int64), -1, -1, plan.pint, plan.pflt,
                     plan.seed, block, lo, hi, ring, plan.n_slots, *EMPTY_CONN)
        _, cols, wq, dl = materialize(plan.pint, plan.pflt, 0, plan.seed, block, lo, hi)
        assert len(cols) > 1000 and (dl == 3).all()
        np.testing.assert_array_equal(ring[3, 0], np.bincount(cols, minlength=hi - lo) * wq[0])
        assert not ring[[0, 1, 2], 0].any()


@numba.njit
def _batch_errors(inv: float, n: int) -> tuple[float, int]:
    y = np.empty(32, np.float64)
    skips = np.empty(32, np.int64)
    worst, wrong = 0.0, 0
    for k in range(0, n, 32):
        key = np.uint64(k // 1024 + 7)
        _skip_batch(key, k, inv, abs(inv) * 1e-12, y, skips)
        for t in range(32):
            exact = math.log(uniform(key, k + t)) * inv
            worst = max(worst, abs(exact - y[t]) / (abs(inv) + exact))
            wrong += skips[t] != min(math.floor(exact), 1 << 40)
    return worst, wrong


def test_batched_skips_are_the_exact_generators_skips() -> None:
    for p in (0.5, 0.02, 1e-5, 1e-9):
        worst, wrong = _batch_errors(1.0 / math.log1p(-p), 1 << 20)
        assert worst < 1e-13 and wrong == 0

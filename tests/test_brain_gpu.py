"""GPU twins against the CPU kernels: same spikes on the same seed."""

from __future__ import annotations

import numpy as np
import pytest

from gpu_helpers import require_cupy

cp = require_cupy()

from neurochunk.kernels.network_gpu import run_window_gpu, to_device  # noqa: E402
from neurochunk.kernels.neurons import run_window  # noqa: E402
from neurochunk.pipeline.network import Network, Population, Projection, brunel_network, coba_network  # noqa: E402
from neurochunk.pipeline.simulation import EMPTY_CONN, _init_chunk  # noqa: E402

pytestmark = pytest.mark.gpu


def _both(plan, steps, state=None, chunk=0, window=None, **opts):
    state = state or _init_chunk(plan, chunk)
    lo = plan.chunks[chunk][0]
    cpu = [a.copy() for a in state]
    s_cpu, i_cpu = run_window(*plan.pop_tables, *cpu, 0, steps, lo, plan.seed, plan.pint, plan.pflt,
                              plan.net.conn_block, *EMPTY_CONN)
    gpu = list(to_device(state))
    window = window or steps
    out = [run_window_gpu(plan.pop_tables, *gpu, s, min(window, steps - s), lo, plan.seed, plan.pint, plan.pflt,
                          plan.net.conn_block, **opts) for s in range(0, steps, window)]
    s_gpu = np.concatenate([a.get() for a, _ in out])
    i_gpu = np.concatenate([b.get() for _, b in out])
    return (s_cpu, i_cpu, cpu), (s_gpu, i_gpu, [a.get() for a in gpu])



def _assert_same(cpu: tuple, gpu: tuple, min_spikes: int = 0) -> None:
    """The same spike steps, ids and end state (v, u, g, ref, ring) from the CPU and the GPU."""
    (sc, ic, state_cpu), (sg, ig, state_gpu) = cpu, gpu
    assert len(sc) > min_spikes
    np.testing.assert_array_equal(sc, sg)
    np.testing.assert_array_equal(ic, ig)
    for a, b in zip(state_cpu, state_gpu):
        np.testing.assert_array_equal(a, b)

def test_coba_4000_first_10_ms_identical() -> None:
    (sc, ic, cpu), (sg, ig, gpu) = _both(coba_network(seed=1).plan(), 100)
    _assert_same((sc, ic, cpu), (sg, ig, gpu), min_spikes=100)


def test_coba_4000_rates_within_2_percent_over_1_s() -> None:
    plan = coba_network(seed=2).plan()
    (sc, ic, _), (sg, ig, _) = _both(plan, 10_000)
    for lo, hi in ((0, 3200), (3200, 4000)):
        rc, rg = ((ic >= lo) & (ic < hi)).sum(), ((ig >= lo) & (ig < hi)).sum()
        assert rg == pytest.approx(rc, rel=0.02)


def test_brunel_with_poisson_and_delays_identical() -> None:
    plan = brunel_network(5000, rule="fixed_probability", seed=4, v_init={"uniform": [10.0, 20.0]}).plan()
    (sc, ic, _), (sg, ig, _) = _both(plan, 300)
    assert len(sc) > 1000
    np.testing.assert_array_equal(sc, sg)
    np.testing.assert_array_equal(ic, ig)


def _random_network(model, receptors, seed, chunk=1000, d_min=0.0):
    """Every kind of projection; delays from ``d_min`` ms (so ``d_min / dt + 1`` steps) up."""
    init = {"v": {"uniform": [-70.0, -50.0]}}
    params = {"RI_ext": 12.0} if model == "lif_cuba_exp" else {"I_ext": 10.0}
    pops = (Population("A", 700, model, params, init), Population("B", 300, model, params, init))
    projs = (Projection("AB", "A", "B", receptors[0], {"normal": [2.0, 0.5]}, p=0.1, delay={"uniform": [d_min, 2.0]}),
             Projection("BA", "B", "A", receptors[1], {"uniform": [-3.0, -1.0]}, p=0.2, delay=1.0),
             Projection("AA", "A", "A", receptors[0], 0.5, rule="all_to_all", delay=d_min),
             Projection("BB", "B", "B", receptors[1], -1.0, rule="one_to_one", delay=d_min),
             Projection("AB2", "A", "B", receptors[1], 0.7, p=0.05, delay=max(d_min, 0.3)),
             Projection("BA2", "B", "A", receptors[0], 0.2, p=0.3, delay=max(d_min, 0.5)))
    return Network(pops, projs, seed=seed, chunk=chunk, conn_block=128).plan()


@pytest.mark.parametrize("engine", ["blocks", "threads"])
@pytest.mark.parametrize("model,receptors", [("lif_cuba_exp", ("Ie", "Ii")), ("izhikevich", ("v", "v"))])
def test_random_models_weights_and_delays_identical(model, receptors, engine) -> None:
    plan = _random_network(model, receptors, int(np.random.default_rng().integers(0, 2**31)))
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 200, engine=engine)
    np.testing.assert_array_equal(sc, sg)
    np.testing.assert_array_equal(ic, ig)
    np.testing.assert_array_equal(cpu[0], gpu[0])


@pytest.mark.parametrize("persistent", [False, True])
@pytest.mark.parametrize("chunk", [0, 1])
def test_chunk_of_a_larger_network_identical(chunk, persistent) -> None:
    """A chunk that cuts target blocks and populations: its own spikes reach only its own neurons."""
    plan = _random_network("lif_cuba_exp", ("Ie", "Ii"), int(np.random.default_rng().integers(0, 2**31)), chunk=600)
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 150, chunk=chunk, window=40, accumulate="shared", persistent=persistent)
    _assert_same((sc, ic, cpu), (sg, ig, gpu), min_spikes=50)


@pytest.mark.parametrize("opts", [{}, {"accumulate": "global"}, {"persistent": True, "batch_steps": 2}])
@pytest.mark.parametrize("chunk", [0, 1])
def test_batched_deliveries_identical(chunk, opts) -> None:
    """Deliveries of several steps in one launch (delays of 4 to 21 steps), every kind of projection, a chunk
    cutting target blocks: the CPU's spikes, v and ring."""
    plan = _random_network("lif_cuba_exp", ("Ie", "Ii"), int(np.random.default_rng().integers(0, 2**31)), chunk=600,
                           d_min=0.3)
    assert plan.min_delay == 4
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 150, chunk=chunk, window=37, **opts)
    _assert_same((sc, ic, cpu), (sg, ig, gpu), min_spikes=50)


@pytest.mark.parametrize("opts", [{"accumulate": "shared"}, {"accumulate": "global"},
                                  {"accumulate": "shared", "threads": 128, "spikes_per_item": 16},
                                  {"accumulate": "global", "threads": 64, "spikes_per_item": 8},
                                  {"accumulate": "shared", "persistent": True, "spikes_per_item": 32},
                                  {"accumulate": "global", "persistent": True, "threads": 128, "spikes_per_item": 16},
                                  {"fast_skip": False}, {"batch_steps": 1}, {"batch_steps": 5},
                                  {"accumulate": "global", "persistent": True, "batch_steps": 1},
                                  {"accumulate": "global", "persistent": True, "batch_steps": 7},
                                  {"threads": 128, "spikes_per_item": 512}])
def test_blocks_engine_options_identical(opts) -> None:
    plan = brunel_network(5000, rule="fixed_probability", seed=6, v_init={"uniform": [10.0, 20.0]}).plan()
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 200, window=64, **opts)
    _assert_same((sc, ic, cpu), (sg, ig, gpu), min_spikes=1000)


def test_spike_list_refills_and_per_step_sort(monkeypatch) -> None:
    """The host reads the spike list's length every step and orders spikes one step at a time."""
    from neurochunk.kernels import network_gpu

    monkeypatch.setattr(network_gpu, "_REC_MIN", 0)
    monkeypatch.setattr(network_gpu, "_SORT_ONCE", 0)
    plan = brunel_network(5000, rule="fixed_probability", seed=7, v_init={"uniform": [10.0, 20.0]}).plan()
    (sc, ic, _), (sg, ig, _) = _both(plan, 120, window=50)
    assert len(sc) > 500
    np.testing.assert_array_equal(sc, sg)
    np.testing.assert_array_equal(ic, ig)


@pytest.mark.parametrize("sort_once", [True, False])
def test_unordered_window_gives_the_spikes_by_step(monkeypatch, sort_once) -> None:
    """``ordered=False``: the same spikes and state, each step's ids in the order they spiked."""
    from neurochunk.kernels import network_gpu

    if not sort_once:
        monkeypatch.setattr(network_gpu, "_SORT_ONCE", 0)
    plan = brunel_network(5000, rule="fixed_probability", seed=8, v_init={"uniform": [10.0, 20.0]}).plan()
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 120, window=48, ordered=False)
    assert len(sc) > 500
    np.testing.assert_array_equal(sc, sg)  # by step
    order = np.lexsort((ig, sg))
    np.testing.assert_array_equal(ic, ig[order])
    for a, b in zip(cpu, gpu):
        np.testing.assert_array_equal(a, b)


def test_bad_options_refused() -> None:
    plan = coba_network(seed=1).plan()
    gpu = to_device(_init_chunk(plan, 0))
    for opts, what in (({"engine": "fast"}, "engine"), ({"accumulate": "l2"}, "accumulate"),
                       ({"threads": 100}, "threads"), ({"batch_steps": 0}, "batch_steps")):
        with pytest.raises(ValueError, match=what):
            run_window_gpu(plan.pop_tables, *gpu, 0, 1, 0, plan.seed, plan.pint, plan.pflt, 1024, **opts)


@pytest.mark.parametrize("block_major", [False, True])
def test_slot_major_single_receptor_ring_identical(block_major) -> None:
    """The compact layout of the 1e9-neuron benchmark: slot-major ring, one receptor, no u/g arrays."""
    plan = brunel_network(5000, rule="fixed_probability", seed=5, v_init={"uniform": [10.0, 20.0]}).plan()
    state = _init_chunk(plan, 0)
    cpu = [a.copy() for a in state]
    s_cpu, i_cpu = run_window(*plan.pop_tables, *cpu, 0, 300, 0, plan.seed, plan.pint, plan.pflt,
                              plan.net.conn_block, *EMPTY_CONN)
    n = len(state[0])
    ring = cp.zeros((plan.n_slots, 1, n), cp.int32).transpose(2, 0, 1)
    v, ref = cp.asarray(state[0]), cp.asarray(state[3])
    s_gpu, i_gpu = run_window_gpu(plan.pop_tables, v, cp.zeros(1, cp.float32), cp.zeros((1, 2), cp.float32), ref,
                                  ring, 0, 300, 0, plan.seed, plan.pint, plan.pflt, plan.net.conn_block, block_major)
    assert len(s_cpu) > 1000
    np.testing.assert_array_equal(s_cpu, s_gpu.get())
    np.testing.assert_array_equal(i_cpu, i_gpu.get())
    np.testing.assert_array_equal(cpu[0], v.get())
    np.testing.assert_array_equal(cpu[4][:, :, 0], ring.get()[:, :, 0])
    assert not cpu[4][:, :, 1].any()
    with pytest.raises(ValueError, match="placeholders"):
        run_window_gpu(coba_network(seed=1).plan().pop_tables, cp.zeros(4000, cp.float32), cp.zeros(1, cp.float32),
                       cp.zeros((1, 2), cp.float32), cp.zeros(4000, cp.int32), cp.zeros((4000, 3, 2), cp.int32),
                       0, 1, 0, 1, np.zeros((0, 12), np.int64), np.zeros((0, 7)), 1024)


@pytest.mark.parametrize("p,skip_filter", [(0.5, 1), (0.1, 1), (0.02, 1), (1e-3, 1), (0.1, 2), (1e-3, 2), (1e-4, 2),
                                           (1.25e-6, 2)])
def test_skip_filters_agree_with_the_double_formula(p, skip_filter) -> None:
    """The float32 (1) and table (2) filters answer most draws and never differ from floor(log(u) / log(1 - p))
    in double."""
    from neurochunk.kernels.network_gpu import _module

    out = cp.zeros(2, cp.uint64)
    n = 1 << 26
    key = int(np.random.default_rng().integers(0, 2**63))
    _module().get_function("skip_agreement")((264,), (256,), (np.uint64(key), np.int64(n), np.float64(1 / np.log1p(-p)),
                                                             np.int32(skip_filter), out))
    taken, bad = (int(x) for x in out.get())
    assert bad == 0
    assert taken > (0.99 if p >= 0.02 or skip_filter == 2 else 0.9) * n


@pytest.mark.parametrize("opts", [{}, {"fast_skip": False}, {"accumulate": "shared"}])
def test_sparse_projections_identical(opts) -> None:
    """p = 5e-4 (the table skip filter; the float32 one cannot resolve these skips): the CPU's spikes, v and ring."""
    plan = brunel_network(100_000, rule="fixed_probability", seed=11, epsilon=5e-4, j=0.5,
                          v_init={"uniform": [10.0, 20.0]}).plan()
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 150, window=50, **opts)
    _assert_same((sc, ic, cpu), (sg, ig, gpu), min_spikes=1000)


@pytest.mark.parametrize("opts", [{}, {"accumulate": "shared"}, {"accumulate": "global", "persistent": True},
                                  {"threads": 128, "spikes_per_item": 8, "persistent": False}, {"engine": "threads"}])
@pytest.mark.parametrize("chunk", [0, 1])
def test_deliver_spikes_gpu_gives_deliver_many_ring(chunk, opts) -> None:
    """Other chunks' spikes (every kind of projection, unsorted, a neuron twice in a step) through the blocks
    engine: the ring buffer ``deliver_many`` leaves on the CPU, in the slot-major one-receptor layout too."""
    from neurochunk.kernels.network_gpu import deliver_spikes_gpu
    from neurochunk.kernels.neurons import neuron_major, slot_major
    from neurochunk.kernels.procedural import deliver_many

    plan = _random_network("lif_cuba_exp", ("Ie", "Ii"), int(np.random.default_rng().integers(0, 2**31)), chunk=600,
                           d_min=0.3)
    lo, hi = plan.chunks[chunk]
    rng = np.random.default_rng(chunk)
    n_spk = 3000
    gids = rng.integers(0, plan.n, n_spk).astype(np.int64)
    steps = rng.integers(40, 56, n_spk).astype(np.int64)
    ring = rng.integers(-5, 5, (hi - lo, plan.n_slots, 2)).astype(np.int32)
    work = slot_major(ring.copy())
    deliver_many(steps, gids, lo, hi, plan.pint, plan.pflt, plan.seed, plan.net.conn_block, lo, hi, work,
                 work.shape[0], *EMPTY_CONN)
    cpu = neuron_major(work)
    assert (cpu != ring).sum() > 1000
    dev = cp.asarray(np.ascontiguousarray(ring.transpose(1, 2, 0))).transpose(2, 0, 1)
    deliver_spikes_gpu(plan.pop_tables, cp.asarray(steps.astype(np.int32)), gids, lo, hi, dev, plan.seed, plan.pint,
                       plan.pflt, plan.net.conn_block, skip=(lo, hi), **opts)
    np.testing.assert_array_equal(cpu, dev.get())
    # a network whose input reaches one receptor: the compact ring of the benchmarks
    plan1 = brunel_network(5000, rule="fixed_probability", seed=9, chunk=2000).plan()
    lo, hi = plan1.chunks[chunk]
    ring = np.zeros((hi - lo, plan1.n_slots, 2), np.int32)
    work = slot_major(ring)
    g1 = rng.integers(0, plan1.n, 4000).astype(np.int64)
    s1 = rng.integers(100, 116, 4000).astype(np.int64)
    deliver_many(s1, g1, lo, hi, plan1.pint, plan1.pflt, plan1.seed, plan1.net.conn_block, lo, hi, work,
                 work.shape[0], *EMPTY_CONN)
    dev = cp.zeros((plan1.n_slots, 1, hi - lo), cp.int32).transpose(2, 0, 1)
    deliver_spikes_gpu(plan1.pop_tables, s1, g1, lo, hi, dev, plan1.seed, plan1.pint, plan1.pflt,
                       plan1.net.conn_block, skip=(lo, hi), **opts)
    np.testing.assert_array_equal(neuron_major(work)[:, :, 0], dev.get()[:, :, 0])
    assert not neuron_major(work)[:, :, 1].any()


def test_deliver_spikes_gpu_refuses_bad_input() -> None:
    from neurochunk.kernels.network_gpu import deliver_spikes_gpu

    plan = brunel_network(5000, rule="fixed_probability", seed=9, chunk=2000).plan()
    ring = cp.zeros((2000, plan.n_slots, 1), cp.int32)
    args = (plan.seed, plan.pint, plan.pflt, plan.net.conn_block)
    with pytest.raises(ValueError, match="one length"):
        deliver_spikes_gpu(plan.pop_tables, np.zeros(3, np.int64), np.zeros(2, np.int64), 0, 2000, ring, *args)
    with pytest.raises(ValueError, match="with 1000 neurons"):
        deliver_spikes_gpu(plan.pop_tables, np.zeros(2, np.int64), np.zeros(2, np.int64), 0, 1000, ring, *args)
    with pytest.raises(ValueError, match="threads"):
        deliver_spikes_gpu(plan.pop_tables, np.zeros(2, np.int64), np.zeros(2, np.int64), 0, 2000, ring, *args,
                           threads=100)
    with pytest.raises(ValueError, match="engine"):
        deliver_spikes_gpu(plan.pop_tables, np.zeros(2, np.int64), np.zeros(2, np.int64), 0, 2000, ring, *args,
                           engine="warp")

"""GPU twins against the CPU kernels: same spikes on the same seed."""

from __future__ import annotations

import numpy as np
import pytest

cp = pytest.importorskip("cupy")
try:
    if cp.cuda.runtime.getDeviceCount() < 1:
        pytest.skip("no CUDA device", allow_module_level=True)
except cp.cuda.runtime.CUDARuntimeError:
    pytest.skip("no CUDA device", allow_module_level=True)

from neurochunk.kernels.network_gpu import run_window_gpu, to_device  # noqa: E402
from neurochunk.kernels.neurons import run_window  # noqa: E402
from neurochunk.pipeline.network import Network, Population, Projection, brunel_network, coba_network  # noqa: E402
from neurochunk.pipeline.simulation import EMPTY_CONN, _init_chunk  # noqa: E402

pytestmark = pytest.mark.gpu


def _both(plan, steps, state=None):
    state = state or _init_chunk(plan, 0)
    cpu = [a.copy() for a in state]
    s_cpu, i_cpu = run_window(*plan.pop_tables, *cpu, 0, steps, 0, plan.seed, plan.pint, plan.pflt,
                              plan.net.conn_block, *EMPTY_CONN)
    gpu = list(to_device(state))
    s_gpu, i_gpu = run_window_gpu(plan.pop_tables, *gpu, 0, steps, 0, plan.seed, plan.pint, plan.pflt,
                                  plan.net.conn_block)
    return (s_cpu, i_cpu, cpu), (s_gpu.get(), i_gpu.get(), [a.get() for a in gpu])


def test_coba_4000_first_10_ms_identical() -> None:
    (sc, ic, cpu), (sg, ig, gpu) = _both(coba_network(seed=1).plan(), 100)
    assert len(sc) > 100
    np.testing.assert_array_equal(sc, sg)
    np.testing.assert_array_equal(ic, ig)
    for a, b in zip(cpu, gpu):
        np.testing.assert_array_equal(a, b)


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


@pytest.mark.parametrize("model,receptors", [("lif_cuba_exp", ("Ie", "Ii")), ("izhikevich", ("v", "v"))])
def test_random_models_weights_and_delays_identical(model, receptors) -> None:
    rng = np.random.default_rng()
    seed = int(rng.integers(0, 2**31))
    init = {"v": {"uniform": [-70.0, -50.0]}}
    params = {"RI_ext": 12.0} if model == "lif_cuba_exp" else {"I_ext": 10.0}
    pops = (Population("A", 700, model, params, init), Population("B", 300, model, params, init))
    projs = (Projection("AB", "A", "B", receptors[0], {"normal": [2.0, 0.5]}, p=0.1, delay={"uniform": [0.0, 2.0]}),
             Projection("BA", "B", "A", receptors[1], {"uniform": [-3.0, -1.0]}, p=0.2, delay=1.0),
             Projection("AA", "A", "A", receptors[0], 0.5, rule="all_to_all"),
             Projection("BB", "B", "B", receptors[1], -1.0, rule="one_to_one"))
    plan = Network(pops, projs, seed=seed, chunk=1000, conn_block=128).plan()
    (sc, ic, cpu), (sg, ig, gpu) = _both(plan, 200)
    np.testing.assert_array_equal(sc, sg)
    np.testing.assert_array_equal(ic, ig)
    np.testing.assert_array_equal(cpu[0], gpu[0])


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

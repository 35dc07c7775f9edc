"""``deliver_many`` and ``materialize`` draw the same synapses under every procedural rule, drawn weights and delays."""

from __future__ import annotations

import numpy as np
import pytest

from neurochunk.kernels.procedural import deliver_many, materialize
from neurochunk.pipeline.network import Network, Population, Projection
from neurochunk.pipeline.simulation import EMPTY_CONN

WEIGHTS = (0.5, {"normal": [0.5, 0.2]}, {"uniform": [-0.3, 0.7]})
DELAYS = (0.2, {"uniform": [0.0, 1.5]})
RULES = (("fixed_probability", {"p": 0.05}), ("all_to_all", {}), ("one_to_one", {}), ("fixed_outdegree", {"k": 40}))


@pytest.mark.parametrize("rule,extra", RULES, ids=[r for r, _ in RULES])
@pytest.mark.parametrize("weight", WEIGHTS, ids=["constant", "normal", "uniform"])
@pytest.mark.parametrize("delay", DELAYS, ids=["constant", "uniform"])
def test_deliver_many_adds_materialized_synapses(rule, extra, weight, delay) -> None:
    n_pre, n_post, block = 300, 300 if rule == "one_to_one" else 900, 128
    pops = (Population("A", n_pre, "lif_cuba_delta"), Population("B", n_post, "lif_cuba_delta"))
    plan = Network(pops, (Projection("AB", "A", "B", "v", weight, rule=rule, delay=delay, **extra),), seed=5,
                   conn_block=block).plan()
    steps = np.repeat(np.array([0, 2], np.int64), n_pre)
    gids = np.tile(np.arange(n_pre, dtype=np.int64), 2)
    # unaligned pieces of the post population, and one reaching below it (into the presynaptic population)
    for lo, hi in ((n_pre + 37, n_pre + n_post - 11), (n_pre, n_pre + 200), (n_pre - 50, n_pre + 150)):
        ring = np.zeros((plan.n_slots, 2, hi - lo), np.int32)
        deliver_many(steps, gids, -1, -1, plan.pint, plan.pflt, plan.seed, block, lo, hi, ring, plan.n_slots,
                     *EMPTY_CONN)
        ptr, cols, wq, dl = materialize(plan.pint, plan.pflt, 0, plan.seed, block, lo, hi)
        assert len(ptr) == n_pre + 1 and ptr[-1] == len(cols) > 0
        off = max(lo, n_pre) - lo  # materialize's columns are local to its clipped lo
        expect = np.zeros_like(ring)
        for s in (0, 2):
            np.add.at(expect, ((s + dl) % plan.n_slots, 0, cols + off), wq)
        np.testing.assert_array_equal(ring, expect)
        if not isinstance(weight, float) and len(cols) > 50:
            assert len(np.unique(wq)) > 10  # the weights are drawn
        if not isinstance(delay, float) and len(cols) > 50:
            assert len(np.unique(dl)) > 1

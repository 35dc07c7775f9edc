"""Faults: a process SIGKILLed mid-commit resumes from the last commit; a worker lost mid-epoch changes nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import cloudpickle
import numpy as np
import pytest
from neurochunk.kernels import memory as K
from neurochunk.pipeline.memorybank import KeyedSource, MemoryBank

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import the tests package

N, SEED = 6000, 4
SOURCE = KeyedSource(seed=21, id_seed=SEED, n_pool=N, n_draws=120, max_delta=0.25, min_delta=-0.05)


def _filled(path, partitions=6, capacity=1500):
    bank = MemoryBank.create(str(path), partitions=partitions, capacity=capacity)
    bank.ingest(K.keyed_ids(SEED, N), np.random.default_rng(SEED).random(N).astype(np.float32))
    return bank


def _same(a: dict, b: dict) -> None:
    for name in ("id", "strength", "count", "last_step"):
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


CHILD = textwrap.dedent("""
    import os, signal, sys
    from neurochunk.pipeline import memorybank as mb
    from neurochunk.pipeline.memorybank import KeyedSource, MemoryBank

    original = mb._write
    def dying_write(part, replicas, token, commit, *args, **kwargs):
        # the second commit of the epoch dies after some partitions are written, before any marker
        if commit.endswith("iter20") and part.index == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(part, replicas, token, commit, *args, **kwargs)
    mb._write = dying_write
    bank = MemoryBank.open(sys.argv[1])
    bank.run_epoch(30, KeyedSource(21, 4, 6000, 120, 0.25, -0.05), decay_rate=0.04, commit_every=10, k=10)
    print("finished without being killed")
""")


def test_sigkill_mid_commit_resumes_with_nothing_lost(tmp_path):
    bank = _filled(tmp_path / "bank.zarr")
    proc = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "bank.zarr")], capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    survivor = MemoryBank.open(str(tmp_path / "bank.zarr"))
    assert survivor.iteration == 10 and survivor.commit_name.endswith("iter10")
    data = tmp_path / "bank.zarr" / "commits"
    assert len([d for d in data.iterdir() if d.is_dir()]) == 3  # two kept commits, the half-written one
    assert survivor.n_memories == N
    stored = survivor.read_all()
    assert len(np.unique(stored["id"])) == N  # zero memories lost
    report = survivor.resume_epoch(SOURCE)
    assert report is not None and report.first_iteration == 10 and survivor.iteration == 30
    assert len([d for d in data.iterdir() if d.is_dir()]) == 2  # the next writer collected it
    assert survivor.resume_epoch(SOURCE) is None  # the epoch is finished

    reference = _filled(tmp_path / "ref.zarr")
    full = reference.run_epoch(30, SOURCE, decay_rate=0.04, commit_every=10, k=10)
    _same(survivor.read_all(), reference.read_all())
    np.testing.assert_array_equal(report.top_ids, full.top_ids[10:])
    assert bank is not None


@dataclass(frozen=True)
class DyingSource:
    """The keyed source, except that the victim worker (``""``: the first to get there) hard-exits at ``at``."""

    inner: KeyedSource
    at: int
    victim: str
    flag: str

    def __call__(self, t: int):
        if t == self.at and not os.path.exists(self.flag):
            from distributed import get_worker

            if self.victim in ("", get_worker().address):
                try:
                    os.close(os.open(self.flag, os.O_CREAT | os.O_EXCL))  # exactly one worker dies
                except FileExistsError:
                    return self.inner(t)
                os._exit(1)
        return self.inner(t)


@pytest.mark.slow
def test_worker_killed_mid_epoch_gives_identical_state(tmp_path):
    from distributed import Client, LocalCluster

    reference = _filled(tmp_path / "ref.zarr")
    expected = reference.run_epoch(50, SOURCE, decay_rate=0.03, commit_every=10, k=15)

    with LocalCluster(n_workers=3, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0", memory_limit="2GiB") as cluster, Client(cluster) as client:
        bank = _filled(tmp_path / "bank.zarr")
        bank.client = client
        bank.run_epoch(20, SOURCE, decay_rate=0.03, commit_every=10, k=15)  # partitions now live on workers
        flag = str(tmp_path / "died")
        rest = bank.run_epoch(30, DyingSource(SOURCE, 25, "", flag), decay_rate=0.03, commit_every=10, k=15)
        assert os.path.exists(flag), "no worker reached iteration 25"
        _same(bank.read_all(), reference.read_all())
        np.testing.assert_allclose(rest.sums, expected.sums[20:], rtol=1e-12)
        np.testing.assert_array_equal(rest.top_ids, expected.top_ids[20:])
        # only the victim's partitions were re-read from the last commit; the others stayed in worker memory
        assert 1 <= rest.partitions_read <= 4, rest.partitions_read
        per_partition = N // bank.n_partitions * 24  # id 8 + strength 4 + count 4 + last_step 8 bytes
        assert 0.5 * per_partition <= rest.bytes_read <= 6 * per_partition
        steady = bank.run_epoch(10, SOURCE, decay_rate=0.03, commit_every=10, k=15)
        assert steady.partitions_read == 0 and steady.bytes_read == 0

"""Running a spiking network: recording spikes, sampled potentials and rates; checkpoints and resume."""

from __future__ import annotations

from typing import Any

import numpy as np

from .network import Plan
from .simulation import SpikingStep, host_state, initial_state
from .state import State
from .synapses import build_connectivity, connectivity_complete, connectivity_loaders

__all__ = ["SpikeRecorder", "simulate", "read_spikes", "spike_stats"]


class SpikeRecorder:
    """Append a run's spikes to a ``spikes`` dataset (``t`` in ms, ``neuron`` ids; chunked by time)."""

    def __init__(self, ds: Any) -> None:
        self.ds = ds

    @classmethod
    def create(cls, url: str, plan: Plan, *, chunk: int = 1 << 18, record: str = "spikes", **opts: Any) -> SpikeRecorder:
        """A new spikes dataset; ``record="rates"`` keeps spikes per (step, population) (array ``counts``) instead
        of every spike (``t`` and ``neuron`` stay empty)."""
        from neurochunk.stores import Dataset

        pops = {p.name: [int(plan.offsets[k]), int(plan.offsets[k + 1])] for k, p in enumerate(plan.net.populations)}
        ds = Dataset.create(url, "spikes", attrs={"dt": plan.dt, "populations": pops, "n_neurons": plan.n,
                                                  "n_spikes": 0, "steps": 0, "record": record},
                            overwrite=True, **opts)
        ds.create_array("t", (0,), np.float64, chunks=(chunk,), dims=("spike",))
        ds.create_array("neuron", (0,), np.int64, chunks=(chunk,), dims=("spike",))
        if record == "rates":
            ds.create_array("counts", (0, len(pops)), np.int64, chunks=(1 << 16, len(pops)),
                            dims=("step", "population"))
        return cls(ds)

    def append_counts(self, counts: np.ndarray, upto_step: int) -> None:
        """Append a batch's spikes per (step, population) (``record="rates"``)."""
        if len(counts):
            self.ds["counts"].append(np.asarray(counts, np.int64), axis=0)
        self.ds.update_attrs(n_spikes=self.n_spikes + int(np.sum(counts)), steps=int(upto_step))

    def start_samples(self, ids: np.ndarray, every_ms: float) -> None:
        """Arrays for sampled membrane potentials: ``v`` (sample, recorded), ``v_t`` (ms), ``recorded`` (ids)."""
        ids = np.unique(np.asarray(ids, np.int64))
        self.ds.create_array("recorded", ids.shape, np.int64, chunks=(max(1, len(ids)),), dims=("recorded",),
                             overwrite=True)
        self.ds["recorded"][...] = ids
        self.ds.create_array("v", (0, len(ids)), np.float32, chunks=(4096, max(1, len(ids))),
                             dims=("sample", "recorded"), overwrite=True, attrs={"units": "mV", "every_ms": every_ms})
        self.ds.create_array("v_t", (0,), np.float64, chunks=(1 << 16,), dims=("sample",), overwrite=True)
        self.ds.update_attrs(n_samples=0)

    def append_samples(self, steps: np.ndarray, values: np.ndarray) -> None:
        if len(steps):
            self.ds["v_t"].append(steps.astype(np.float64) * float(self.ds.attrs["dt"]))
            self.ds["v"].append(values.astype(np.float32), axis=0)
        self.ds.update_attrs(n_samples=int(self.ds.attrs.get("n_samples", 0)) + len(steps))

    @property
    def n_spikes(self) -> int:
        return int(self.ds.attrs["n_spikes"])

    def append(self, steps: np.ndarray, gids: np.ndarray, upto_step: int) -> None:
        if len(steps):
            self.ds["t"].append(steps.astype(np.float64) * float(self.ds.attrs["dt"]))
            self.ds["neuron"].append(gids.astype(np.int64))
        self.ds.update_attrs(n_spikes=self.n_spikes + len(steps), steps=int(upto_step))

    def write_rates(self, bin_ms: float = 1.0) -> None:
        """Population rates (Hz) in ``bin_ms`` bins as array ``rates`` (bin, population), streamed by chunk."""
        attrs = self.ds.attrs
        pops = list(attrs["populations"].values())
        edges = np.array([lo for lo, _ in pops] + [pops[-1][1]], np.int64)
        sizes = np.diff(edges).astype(np.float64)
        n_bins = max(1, int(np.ceil(attrs["steps"] * attrs["dt"] / bin_ms)))
        counts = np.zeros((n_bins, len(pops)), np.int64)
        n, step = int(attrs["n_spikes"]), self.ds["t"].chunks[0]
        if "counts" in self.ds:  # record="rates": the counts per step, binned as the spikes' times would be
            n, c = 0, np.asarray(self.ds["counts"][: int(attrs["steps"])])
            b = np.minimum((np.arange(len(c)) * float(attrs["dt"]) / bin_ms).astype(np.int64), n_bins - 1)
            np.add.at(counts, b, c)
        for a in range(0, n, step):
            t = np.asarray(self.ds["t"][a:min(n, a + step)])
            g = np.asarray(self.ds["neuron"][a:min(n, a + step)])
            b = np.minimum((t / bin_ms).astype(np.int64), n_bins - 1)
            np.add.at(counts, (b, np.searchsorted(edges, g, side="right") - 1), 1)
        rates = (counts / sizes / (bin_ms * 1e-3)).astype(np.float32)
        self.ds.create_array("rates", rates.shape, np.float32, chunks=(min(n_bins, 1 << 16), len(pops)),
                             dims=("bin", "population"), overwrite=True,
                             attrs={"bin_ms": bin_ms, "populations": list(attrs["populations"])})
        self.ds["rates"][...] = rates

    def truncate(self, n_spikes: int, step: int, n_samples: int | None = None) -> None:
        """Forget spikes recorded after a checkpoint (a run killed between recording and committing)."""
        for name in ("t", "neuron"):
            self.ds[name].resize((n_spikes if "counts" not in self.ds else 0,))
        if "counts" in self.ds:
            self.ds["counts"].resize((int(step), self.ds["counts"].shape[1]))
        self.ds.update_attrs(n_spikes=int(n_spikes), steps=int(step))
        if "v" in self.ds:
            n = int(n_samples if n_samples is not None else 0)
            self.ds["v_t"].resize((n,))
            self.ds["v"].resize((n, self.ds["v"].shape[1]))
            self.ds.update_attrs(n_samples=n)


def simulate(net: Any, duration_ms: float, *, spikes_url: str, client: Any = None, checkpoint_url: str | None = None,
             checkpoint_every_ms: float = 0.0, resume: bool = False, batch_ms: float = 100.0,
             connectivity_url: str | None = None, progress: bool = True, on_batch: Any = None,
             record_v: Any = None, record_every_ms: float = 1.0, stream_state_url: str | None = None,
             backend: str = "cpu", record: str = "spikes", exchange: str = "auto", overlap: int = 1) -> dict[str, Any]:
    """Run ``net`` until ``duration_ms`` (from the start, or from its last checkpoint with ``resume``).

    Spikes go to ``spikes_url`` (and, at the end, population rates in 1 ms bins as its ``rates``
    array); with ``checkpoint_url`` the full State is
    committed every ``checkpoint_every_ms`` (after the batch's spikes are
    recorded) and at the end. ``record_v`` (neuron ids) samples their membrane potential every
    ``record_every_ms`` into the spikes dataset's ``v`` array. With ``stream_state_url`` the run is
    out-of-core (``pipeline.streaming``): the state lives in that dataset, streamed every exchange window,
    and ``resume`` continues from its last window (checkpoints and ``record_v`` do not apply).
    ``backend="gpu"`` runs the chunks on the workers' GPUs (see ``pipeline.simulation.SpikingStep``);
    checkpoints then hold the state copied to the host, in the CPU's layout. ``record="rates"`` (large
    runs) keeps only the spikes per (step, population), counted by the window tasks on the workers: the
    dataset's ``counts`` and ``rates`` arrays, no ``t``/``neuron`` entries (not with ``stream_state_url``).
    ``exchange`` and ``overlap`` choose how spikes cross chunks (``SpikingStep``); the spikes do not change.
    Returns a summary with the Runner's reports (none when streamed; then ``windows`` holds their seconds).
    """
    from neurochunk.stores import Dataset

    from .runner import Runner

    plan = net.plan() if hasattr(net, "plan") else net
    total = int(round(duration_ms / plan.dt))
    loaders = None
    if plan.net.connectivity == "stored":
        if connectivity_url is None:
            raise ValueError("connectivity: stored needs a connectivity_url to write the synapses to")
        names = [f"{str(connectivity_url).rstrip('/')}/{p.name}" for p in plan.net.projections]
        if not (resume and all(connectivity_complete(u, len(plan.chunks)) for u in names)):
            names = build_connectivity(plan, connectivity_url, client)
        loaders = connectivity_loaders(plan, names)
    if record not in ("spikes", "rates"):
        raise ValueError(f"record must be 'spikes' or 'rates', got {record!r}")
    if stream_state_url is not None:
        if record != "spikes":
            raise ValueError("record='rates' is not available with stream_state_url (out-of-core)")
        if backend != "cpu":
            raise ValueError(f"stream_state_url (out-of-core) runs on backend 'cpu' only, not {backend!r}")
        if record_v is not None:
            raise ValueError("record_v (sampled potentials) is not available with stream_state_url (out-of-core)")
        from .streaming import simulate_streaming

        res = simulate_streaming(plan, duration_ms, state_url=stream_state_url, spikes_url=spikes_url, client=client,
                                 resume=resume, loaders=loaders, progress=progress)
        return {**res, "reports": [], "state": None}
    ckpt = None
    state = None
    if checkpoint_url is not None:
        try:
            ckpt = Dataset.open(checkpoint_url, kind="neuron_state", mode="r+") if resume else None
        except FileNotFoundError:
            ckpt = None
        if ckpt is not None and ckpt.commits.latest() is not None:
            state = State.restore(ckpt)
            recorder = SpikeRecorder(Dataset.open(spikes_url, kind="spikes", mode="r+"))
            if recorder.ds.attrs.get("record", "spikes") != record:
                raise ValueError(f"{spikes_url} recorded {recorder.ds.attrs.get('record', 'spikes')!r}; "
                                 f"resume it with record={recorder.ds.attrs.get('record', 'spikes')!r}")
            recorder.truncate(int(state.scalars["n_spikes"]), int(state.scalars["step"]),
                              int(state.scalars.get("n_samples", 0)))
        if ckpt is None:
            ckpt = Dataset.create(checkpoint_url, "neuron_state", attrs={"dt": plan.dt, "model": "network"},
                                  overwrite=True)
    every_v = max(1, int(round(record_every_ms / plan.dt)))
    if state is None:
        state = initial_state(plan, backend, client)
        recorder = SpikeRecorder.create(spikes_url, plan, record=record)
        if record_v is not None:
            recorder.start_samples(record_v, every_v * plan.dt)
    every = int(round(checkpoint_every_ms / plan.dt)) if checkpoint_every_ms else 0
    batch = max(1, int(round(batch_ms / plan.dt)))
    if every:
        batch = min(batch, every)
    last = {"ckpt": int(state.scalars["step"])}

    def on_report(report: Any, st: State) -> None:
        now = report.first_step + report.n_steps
        if "counts" in report.outputs:
            recorder.append_counts(report.outputs["counts"], now)
        else:
            recorder.append(*report.outputs["spikes"], now)
        if report.outputs.get("samples") is not None:
            recorder.append_samples(*report.outputs["samples"])
        if ckpt is not None and ((every and now - last["ckpt"] >= every) or now >= total):
            host_state(st).update(n_spikes=recorder.n_spikes,
                      n_samples=int(recorder.ds.attrs.get("n_samples", 0))).checkpoint(ckpt, f"step-{now}")
            last["ckpt"] = now
        if on_batch is not None:
            on_batch(report, st)

    state = state.persist(client)  # the first batch's two graphs (state, spikes) then share plain inputs
    step = SpikingStep(plan, loaders, batch_steps=batch,
                       sample=None if record_v is None else (record_v, every_v), backend=backend, record=record,
                       exchange=exchange, overlap=overlap)
    runner = Runner(step, state, client=client, on_batch=on_report, progress=progress)
    remaining = total - runner.steps_done
    if remaining > 0:
        runner.run(remaining)
    recorder.write_rates()
    return {"spikes_url": str(recorder.ds.url), "steps": runner.steps_done, "n_spikes": recorder.n_spikes,
            "reports": runner.reports, "plan": plan, "state": runner.state}


def read_spikes(url: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """``(t ms, neuron ids, attributes)`` of a spikes dataset (in memory)."""
    from neurochunk.stores import Dataset

    ds = Dataset.open(url, kind="spikes")
    n = int(ds.attrs["n_spikes"])
    return np.asarray(ds["t"][:n]), np.asarray(ds["neuron"][:n]), ds.attrs


def spike_stats(t: np.ndarray, gids: np.ndarray, populations: dict[str, list[int]], duration_ms: float,
                skip_ms: float = 100.0) -> dict[str, Any]:
    """Mean rate (Hz) per population and overall, and the mean ISI CV (spikes after ``skip_ms``)."""
    out: dict[str, Any] = {}
    n = max(hi for _, hi in populations.values())
    out["rate"] = len(t) / n / (duration_ms / 1e3)
    for name, (lo, hi) in populations.items():
        out[f"rate_{name}"] = float(((gids >= lo) & (gids < hi)).sum()) / (hi - lo) / (duration_ms / 1e3)
    keep = t >= skip_ms
    tt, ii = t[keep], gids[keep]
    order = np.lexsort((tt, ii))
    tt, ii = tt[order], ii[order]
    isi = np.diff(tt)
    same = ii[1:] == ii[:-1]
    isi, owner = isi[same], ii[1:][same]
    cvs = []
    if len(isi):
        starts = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]])
        for a, b in zip(starts, np.r_[starts[1:], len(owner)], strict=True):
            x = isi[a:b]
            if len(x) >= 2 and x.mean() > 0:
                cvs.append(x.std() / x.mean())
    out["cv"] = float(np.mean(cvs)) if cvs else None
    return out

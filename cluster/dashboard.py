"""A neurochunk page on the Dask dashboard: run progress, simulation rates, store tiers.

The generic dashboard shows tasks, workers and memory. This page adds what only
neurochunk knows:

* whatever a workflow **publishes** with :func:`publish` (any JSON-able value
  under a key), shown as a table;
* for a simulation, what it publishes with :func:`publish_simulation`: steps
  done out of the total, and each population's firing rate;
* for any run, the store tiers' counters (requests, hit rate, bytes read and
  written per tier), gathered live from the scheduler process and every worker
  with :func:`neurochunk.stores.tier_stats_all`.

Published values live in the scheduler's metadata (``Client.set_metadata``
under ``("neurochunk", key)``), so any process with a client can publish, and
the page needs no extra service. :func:`install` adds the page to a running
scheduler (``connect`` does it for every cluster it starts); a scheduler
started elsewhere gets it by listing this module in the Dask config key
``distributed.scheduler.http.routes``. The page is at ``/neurochunk`` beside
``/status``, and its data as JSON at ``/neurochunk.json``.

Example
-------
>>> from neurochunk.cluster import connect, dashboard
>>> client = connect()                                   # doctest: +SKIP
>>> dashboard.publish(client, "stage", "writing spikes")  # doctest: +SKIP
>>> dashboard.publish_simulation(client, steps_done=500, n_steps=1000,
...                              rates_hz={"E": 4.1, "I": 11.7})  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

from tornado import web

__all__ = ["METADATA_KEY", "PAGE_PATH", "install", "page_url", "publish", "publish_simulation", "routes",
           "simulation_publisher", "snapshot"]

METADATA_KEY = "neurochunk"
PAGE_PATH = "neurochunk"
_SUMMED = ("requests", "hits", "misses", "bytes_read", "bytes_written", "evictions", "bytes_held")
_TIER_TIMEOUT_S = 2.0


def publish(client: Any, key: str, value: Any) -> None:
    """Show ``value`` under ``key`` on the neurochunk dashboard page.

    Parameters
    ----------
    client
        A ``distributed.Client`` of the cluster the run uses.
    key
        A short name (``"stage"``, ``"chunks_written"``); a later call replaces it.
    value
        Anything JSON-able: a number, a string, a list or a mapping.
    """
    json.dumps(value)  # fail here, not in the page, on values that cannot be shown
    client.set_metadata([METADATA_KEY, "values", str(key)], value)
    client.set_metadata([METADATA_KEY, "updated", str(key)], time.time())


def publish_simulation(client: Any, *, steps_done: int, n_steps: int,
                       rates_hz: Mapping[str, float] | None = None, dt_ms: float | None = None) -> None:
    """Publish a simulation's progress: steps done of ``n_steps`` and population rates (Hz).

    A Runner's ``on_batch`` callback is the natural caller: publish after each batch.
    """
    value: dict[str, Any] = {"steps_done": int(steps_done), "n_steps": int(n_steps),
                             "rates_hz": {str(k): float(v) for k, v in (rates_hz or {}).items()}}
    if dt_ms is not None:
        value["dt_ms"] = float(dt_ms)
    publish(client, "simulation", value)


def simulation_publisher(client: Any, n_steps: int, rates: Callable[[Any, Any], Mapping[str, float]] | None = None,
                         *, dt_ms: float | None = None, then: Callable[[Any, Any], None] | None = None
                         ) -> Callable[[Any, Any], None]:
    """An ``on_batch`` callback for :class:`neurochunk.pipeline.Runner` that publishes each batch.

    Parameters
    ----------
    client
        The run's client.
    n_steps
        The steps the whole run will take (the page's 100 %).
    rates
        ``rates(report, state) -> {population: Hz}``, e.g. from the batch's recorded outputs.
    then
        Another ``on_batch`` callback to call afterwards (a recorder).
    """
    def on_batch(report: Any, state: Any) -> None:
        publish_simulation(client, steps_done=report.first_step + report.n_steps, n_steps=n_steps,
                           rates_hz=rates(report, state) if rates is not None else None, dt_ms=dt_ms)
        if then is not None:
            then(report, state)

    return on_batch


def page_url(client: Any) -> str:
    """The neurochunk page's address, beside the client's dashboard link."""
    link = client.dashboard_link
    return link.rsplit("/", 1)[0] + "/" + PAGE_PATH


def install(client: Any) -> bool:
    """Add the neurochunk page to the scheduler ``client`` talks to; return whether it is there.

    Safe to call twice. A scheduler without neurochunk importable, or without an
    HTTP server, is left as it is (returns ``False``).
    """
    try:
        return bool(client.run_on_scheduler(_install_on_scheduler))
    except Exception:  # noqa: BLE001 - whatever the reason, the scheduler has no page
        return False


def _install_on_scheduler(dask_scheduler: Any) -> bool:
    from distributed.http.utils import get_handlers

    app = getattr(dask_scheduler, "http_application", None)
    if app is None:
        return False
    if getattr(app, "_neurochunk_page", False):
        return True
    app.add_handlers(r".*$", get_handlers(dask_scheduler, [__name__], prefix="/"))
    app._neurochunk_page = True
    return True


def _process_tiers() -> str:
    from neurochunk.stores import tier_stats_all

    return json.dumps({"pid": os.getpid(), "stats": tier_stats_all()})


def _deserialized(value: Any) -> Any:
    from distributed.protocol import Serialized, deserialize

    return deserialize(value.header, value.frames) if isinstance(value, Serialized) else value


async def _gather_tiers(scheduler: Any) -> tuple[dict[str, dict[str, float]], int]:
    """Tier counters summed over the scheduler's process and every worker process (each once)."""
    from distributed.protocol.pickle import dumps

    per_pid: dict[int, dict[str, Any]] = {}
    own = json.loads(_process_tiers())
    per_pid[own["pid"]] = own["stats"]
    if scheduler.workers:
        msg = {"op": "run", "function": dumps(_process_tiers), "args": dumps(()), "kwargs": dumps({}),
               "wait": True}
        try:
            replies = await asyncio.wait_for(scheduler.broadcast(msg=msg, on_error="ignore"), _TIER_TIMEOUT_S)
        except (TimeoutError, OSError):
            replies = {}
        for reply in replies.values():
            if isinstance(reply, dict) and reply.get("status") == "OK":
                got = json.loads(_deserialized(reply["result"]))
                per_pid[got["pid"]] = got["stats"]
    total: dict[str, dict[str, float]] = {}
    for stats in per_pid.values():
        for tiers in stats.values():
            for tier, counters in tiers.items():
                acc = total.setdefault(tier, dict.fromkeys(_SUMMED, 0))
                for k in _SUMMED:
                    acc[k] += counters.get(k, 0)
    for acc in total.values():
        acc["hit_rate"] = acc["hits"] / acc["requests"] if acc["requests"] else 0.0
    return total, len(per_pid)


async def snapshot(scheduler: Any) -> dict[str, Any]:
    """Everything the page shows, as a JSON-able mapping (runs on the scheduler)."""
    meta = scheduler.task_metadata.get(METADATA_KEY, {})
    values = dict(meta.get("values", {})) if isinstance(meta, dict) else {}
    tiers, n_processes = await _gather_tiers(scheduler)
    counts: dict[str, int] = {}
    for ts in scheduler.tasks.values():
        counts[ts.state] = counts.get(ts.state, 0) + 1
    return {
        "time": time.time(),
        "simulation": values.pop("simulation", None),
        "values": values,
        "tiers": tiers,
        "processes": n_processes,
        "workers": len(scheduler.workers),
        "threads": sum(ws.nthreads for ws in scheduler.workers.values()),
        "tasks": counts,
    }


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _e(x: Any) -> str:
    return html.escape(str(x))


def _simulation_html(sim: Mapping[str, Any] | None) -> str:
    if not sim:
        return "<p class='none'>No simulation has published progress in this run.</p>"
    done, total = int(sim.get("steps_done", 0)), max(int(sim.get("n_steps", 0)), 1)
    frac = min(done / total, 1.0)
    parts = [f"<p>Steps done: <b id='steps-done'>{done}</b> of <b id='n-steps'>{total}</b>"
             + (f" (dt = {_e(sim['dt_ms'])} ms)" if "dt_ms" in sim else "") + "</p>",
             f"<div class='bar'><div style='width:{100 * frac:.1f}%'></div><span>{100 * frac:.1f}%</span></div>"]
    rates = sim.get("rates_hz") or {}
    if rates:
        top = max(max(rates.values()), 1e-9)
        rows = "".join(
            f"<tr><td>{_e(name)}</td><td class='num'>{rate:.2f}</td>"
            f"<td><div class='rate' style='width:{200 * rate / top:.0f}px'></div></td></tr>"
            for name, rate in rates.items())
        parts.append("<table id='rates'><tr><th>population</th><th>rate (Hz)</th><th></th></tr>"
                     f"{rows}</table>")
    return "".join(parts)


def _tiers_html(tiers: Mapping[str, Mapping[str, float]]) -> str:
    if not tiers:
        return "<p class='none'>No tiered store has been opened in this run yet.</p>"
    order = [t for t in ("ram", "disk", "origin") if t in tiers] + sorted(set(tiers) - {"ram", "disk", "origin"})
    rows = "".join(
        f"<tr id='tier-{_e(t)}'><td>{_e(t)}</td><td class='num'>{int(tiers[t]['requests'])}</td>"
        f"<td class='num'>{int(tiers[t]['hits'])}</td>"
        f"<td class='num'>{'' if t == 'origin' else format(tiers[t]['hit_rate'], '.1%')}</td>"
        f"<td class='num'>{_bytes(tiers[t]['bytes_read'])}</td><td class='num'>{_bytes(tiers[t]['bytes_written'])}</td>"
        f"<td class='num'>{_bytes(tiers[t]['bytes_held'])}</td><td class='num'>{int(tiers[t]['evictions'])}</td></tr>"
        for t in order)
    return ("<table id='tiers'><tr><th>tier</th><th>requests</th><th>hits</th><th>hit rate</th>"
            f"<th>bytes read</th><th>bytes written</th><th>held</th><th>evictions</th></tr>{rows}</table>")


def _values_html(values: Mapping[str, Any]) -> str:
    if not values:
        return "<p class='none'>Nothing published yet (<code>neurochunk.cluster.dashboard.publish</code>).</p>"
    rows = "".join(f"<tr><td>{_e(k)}</td><td><code>{_e(json.dumps(v, default=str))}</code></td></tr>"
                   for k, v in sorted(values.items()))
    return f"<table id='values'><tr><th>key</th><th>value</th></tr>{rows}</table>"


_STYLE = """
body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:0;color:#222}
header{background:#3b6ea8;color:#fff;padding:10px 18px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:20px;margin:0} header a{color:#dde8f6}
main{padding:4px 18px} h2{font-size:16px;border-bottom:1px solid #ccc;padding-bottom:3px;margin-top:18px}
table{border-collapse:collapse} td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
th{background:#f3f5f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.bar{position:relative;width:420px;height:20px;background:#e4e8ee;border-radius:3px}
.bar div{height:100%;background:#4c9a5f;border-radius:3px} .bar span{position:absolute;left:8px;top:1px;font-size:13px}
.rate{height:12px;background:#c4563b} .none{color:#888} .meta{color:#555;font-size:13px}
"""


class NeurochunkPage(web.RequestHandler):
    """``/neurochunk``: the page (refreshes itself every 2 s)."""

    def initialize(self, dask_server: Any = None, extra: Any = None) -> None:
        self.server = dask_server

    async def get(self) -> None:
        snap = await snapshot(self.server)
        tasks = ", ".join(f"{n} {s}" for s, n in sorted(snap["tasks"].items())) or "none"
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.write(
            "<!DOCTYPE html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='2'>"
            f"<title>neurochunk</title><style>{_STYLE}</style></head><body>"
            "<header><h1>neurochunk</h1><a href='status'>Dask status</a><a href='neurochunk.json'>JSON</a></header>"
            f"<main><p class='meta'>{snap['workers']} workers, {snap['threads']} threads; "
            f"scheduler tasks: {_e(tasks)}; tier counters from {snap['processes']} processes; "
            f"{time.strftime('%H:%M:%S', time.localtime(snap['time']))}</p>"
            f"<h2>Simulation</h2>{_simulation_html(snap['simulation'])}"
            f"<h2>Store tiers</h2>{_tiers_html(snap['tiers'])}"
            f"<h2>Published by the workflow</h2>{_values_html(snap['values'])}"
            "</main></body></html>")


class NeurochunkJSON(web.RequestHandler):
    """``/neurochunk.json``: the page's data."""

    def initialize(self, dask_server: Any = None, extra: Any = None) -> None:
        self.server = dask_server

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(json.dumps(await snapshot(self.server), default=str))


routes: list[tuple[str, type, dict[str, Any]]] = [
    (PAGE_PATH, NeurochunkPage, {}),
    (PAGE_PATH + ".json", NeurochunkJSON, {}),
]

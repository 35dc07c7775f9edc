"""The dashboard in a real browser: Debian's headless Chromium watches a running workflow.

Chromium is driven over the DevTools protocol (tornado's websocket client), so the
test reads the task stream's Bokeh data source the page really received, and the
neurochunk page's DOM. Without ``chromium`` on the PATH the browser tests skip
(``.ci/setup-slurm.sh`` installs it in CI).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from neurochunk.cluster import connect, dashboard
from neurochunk.workflows import run_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(bash .ci/setup-slurm.sh installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--hide-scrollbars", "--mute-audio"]
DOCS = Path(__file__).resolve().parents[1] / "docs"

TASK_STREAM_JS = """(() => {
  const names = [];
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) {
    const models = doc._all_models ? Array.from(doc._all_models.values()) : Array.from(doc.all_models);
    for (const m of models) {
      const data = m.data;
      if (data && data.worker_thread !== undefined && data.key !== undefined) names.push(...Array.from(data.name));
    }
  }
  return JSON.stringify(names.filter(n => n !== "start" && !n.startsWith("transfer")));
})()"""


class Browser:
    """One headless Chromium with a fresh profile, driven over the DevTools websocket."""

    def __init__(self, width: int = 1280, height: int = 900) -> None:
        self.profile = tempfile.mkdtemp(prefix="nc-chromium-")
        self.proc = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
             f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or len(port_file.read_text().split()) < 2:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not open its DevTools port")
            time.sleep(0.05)
        self.port = int(port_file.read_text().split()[0])
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=10).read())
        self.ws_url = next(p["webSocketDebuggerUrl"] for p in pages if p["type"] == "page")
        self._ids = itertools.count(1)
        self.loop = asyncio.new_event_loop()
        self.ws = self.loop.run_until_complete(self._connect())

    async def _connect(self) -> Any:
        from tornado.websocket import websocket_connect

        return await websocket_connect(self.ws_url, max_message_size=64 * 2**20)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        mid = next(self._ids)
        await self.ws.write_message(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = await asyncio.wait_for(self.ws.read_message(), 30)
            if msg is None:
                raise RuntimeError("chromium closed the DevTools connection")
            reply = json.loads(msg)
            if reply.get("id") == mid:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        return self.loop.run_until_complete(self._call(method, params))

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'", timeout=30)

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def screenshot(self, path: Path) -> Path:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        return path

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
            self.loop.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture()
def browser() -> Any:
    b = Browser()
    yield b
    b.close()


def _demo_config(tmp_path: Path, n_neurons: int, chunk: int) -> Path:
    cfg = {"workflow": "demo",
           "store": {"url": str(tmp_path / "state.zarr"), "overwrite": True,
                     "tiers": {"ram_bytes": 256 * 2**20, "disk_path": str(tmp_path / "cache")}},
           "params": {"n_neurons": n_neurons, "chunk": chunk}}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.slow
@needs_chromium
def test_status_page_task_stream_shows_running_workflow(tmp_path: Path, browser: Browser,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    client = connect({"n_workers": 1, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0"})
    try:
        err = capsys.readouterr().err
        assert f"dashboard at {client.dashboard_link}" in err and client.dashboard_link.startswith("http://127.0.0.1:")
        assert f"run page at {dashboard.page_url(client)}" in err
        browser.goto(client.dashboard_link)
        assert browser.evaluate("document.title").startswith("Dask")
        assert json.loads(browser.evaluate(TASK_STREAM_JS) or "[]") == []  # nothing has run yet
        result: dict[str, Any] = {}
        runner = threading.Thread(target=lambda: result.update(
            run_config(_demo_config(tmp_path, 4_000_000, 100_000), client=client)))
        runner.start()
        try:
            names: list[str] = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not names:
                names = json.loads(browser.evaluate(TASK_STREAM_JS) or "[]")
                time.sleep(0.25)
            seen_while_running = runner.is_alive()
        finally:
            runner.join(120)
        assert names, "the task stream never showed a task"
        assert seen_while_running, "the workflow had finished before the browser saw its tasks"
        assert result["reread_equal"] is True and result["origin_reads"]["second"] == 0
        browser.screenshot(tmp_path / "status.png")
        assert (tmp_path / "status.png").stat().st_size > 10_000
        if os.environ.get("NEUROCHUNK_KEEP_SCREENSHOT"):
            shutil.copy(tmp_path / "status.png", DOCS / "dashboard-status-task-stream.png")
    finally:
        client.close()


@pytest.mark.slow
@needs_chromium
def test_neurochunk_page_shows_simulation_and_tiers(tmp_path: Path, browser: Browser) -> None:
    client = connect({"n_workers": 2, "threads_per_worker": 1, "dashboard_address": "127.0.0.1:0"}, quiet=True)
    try:
        summary = run_config(_demo_config(tmp_path, 400_000, 50_000), client=client)
        dashboard.publish_simulation(client, steps_done=7_500, n_steps=10_000, dt_ms=0.1,
                                     rates_hz={"L2/3 E": 3.2, "L2/3 I": 11.8, "L4 E": 5.6, "L4 I": 14.1})
        dashboard.publish(client, "stage", "demo finished")
        dashboard.publish(client, "origin_reads", summary["origin_reads"])
        browser.goto(dashboard.page_url(client))
        text = browser.evaluate("document.body.innerText")
        assert "Steps done: 7500 of 10000" in text and "75.0%" in text
        assert browser.evaluate("document.querySelectorAll('#rates tr').length") == 5  # header + 4 populations
        assert "L4 I" in text and "14.10" in text
        ram = browser.evaluate("[...document.querySelectorAll('#tier-ram td')].map(td => td.innerText)")
        origin = browser.evaluate("[...document.querySelectorAll('#tier-origin td')].map(td => td.innerText)")
        # the demo reads 8 chunks twice; the second read is served from the RAM tiers of the workers
        assert ram[0] == "ram" and int(ram[2]) >= summary["ram_hits_second_read"] > 0
        assert 0 < float(ram[3].rstrip("%")) <= 100
        # the writes went through to the origin (write-through), which then served no second read
        assert origin[0] == "origin" and int(origin[1]) >= summary["origin_reads"]["first"] and origin[5] != "0 B"
        assert "demo finished" in text
        snap = json.loads(urllib.request.urlopen(dashboard.page_url(client) + ".json", timeout=10).read())
        assert snap["simulation"]["rates_hz"]["L4 E"] == 5.6 and snap["workers"] == 2
        shot = browser.screenshot(tmp_path / "neurochunk-page.png")
        assert shot.stat().st_size > 10_000
        if os.environ.get("NEUROCHUNK_KEEP_SCREENSHOT"):
            shutil.copy(shot, DOCS / "dashboard-neurochunk-page.png")
    finally:
        client.close()


def test_publish_rejects_values_the_page_cannot_show() -> None:
    client = connect({"n_workers": 1, "processes": False, "dashboard_address": "127.0.0.1:0"}, quiet=True)
    try:
        with pytest.raises(TypeError):
            dashboard.publish(client, "bad", object())
        dashboard.publish(client, "chunks_written", 12)
        assert client.get_metadata([dashboard.METADATA_KEY, "values", "chunks_written"]) == 12
        # the dashboard listens on the loopback address only, unless the config says otherwise
        bound = client.run_on_scheduler(
            lambda dask_scheduler: [s.getsockname()[0] for s in dask_scheduler.http_server._sockets.values()])
        assert bound and set(bound) == {"127.0.0.1"}
    finally:
        client.close()


def test_simulation_publisher_reports_runner_batches() -> None:
    from neurochunk.pipeline.runner import BatchReport

    client = connect({"n_workers": 1, "processes": False, "dashboard_address": "127.0.0.1:0"}, quiet=True)
    try:
        seen = []
        on_batch = dashboard.simulation_publisher(
            client, 1000, rates=lambda report, state: {"E": report.outputs["spikes"] / 0.05},
            dt_ms=0.1, then=lambda report, state: seen.append(report.first_step))
        on_batch(BatchReport(first_step=0, n_steps=500, build_s=0.0, compute_s=0.1, outputs={"spikes": 2}), None)
        on_batch(BatchReport(first_step=500, n_steps=250, build_s=0.0, compute_s=0.1, outputs={"spikes": 3}), None)
        sim = client.get_metadata([dashboard.METADATA_KEY, "values", "simulation"])
        assert sim == {"steps_done": 750, "n_steps": 1000, "rates_hz": {"E": 60.0}, "dt_ms": 0.1}
        assert seen == [0, 500]
    finally:
        client.close()

"""Configs are validated before anything runs; the CLI runs, describes and plots datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from neurochunk.workflows import ConfigError, prepare
from neurochunk.workflows.cli import main


def _write(tmp_path: Path, cfg: dict) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(
    ("cfg", "field", "problem"),
    [
        ({"workflow": "demo", "parms": {}}, "parms", "unknown key"),
        ({"workflow": "demo", "params": {"n_neurons": "many"}}, "params.n_neurons", "expected int, got str"),
        ({"workflow": "demo", "params": {"n_neurons": 10, "chunks": 5}}, "params.chunks", "unknown key"),
        ({"workflow": "demo", "cluster": {"n_workers": 1.5}}, "cluster.n_workers", "expected int, got float"),
        ({"workflow": "demo", "cluster": {"jobqueue": {"kind": "condor"}}}, "cluster.jobqueue.kind", "must be one of"),
        ({"workflow": "demo", "store": {"tiers": {}}}, "store.url", "is required"),
        ({"workflow": "demo", "store": {"url": "x", "tiers": {"write": "sometimes"}}}, "store.tiers.write", "must be one of"),
        ({"workflow": "nope"}, "workflow", "unknown workflow 'nope'"),
        ({"params": {}}, "workflow", "is required"),
        ({"workflow": "demo", "progress": "yes"}, "progress", "expected bool"),
    ],
)
def test_config_errors_name_file_and_field(tmp_path: Path, cfg: dict, field: str, problem: str) -> None:
    path = _write(tmp_path, cfg)
    with pytest.raises(ConfigError) as err:
        prepare(path)
    assert err.value.field == field
    assert str(path) in str(err.value) and problem in str(err.value)


def test_config_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("workflow: [demo\n")
    with pytest.raises(ConfigError, match="bad.yaml: is not valid YAML"):
        prepare(path)


def test_cli_reports_config_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, {"workflow": "demo", "params": {"seed": "x"}})
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "field 'params.seed': expected int" in err and "Traceback" not in err


def test_demo_run_info_and_plot_end_to_end(tmp_path: Path) -> None:
    cfg = {"workflow": "demo", "cluster": {"n_workers": 1, "threads_per_worker": 2, "dashboard_address": "127.0.0.1:0"},
           "store": {"url": str(tmp_path / "state.zarr"),
                     "tiers": {"ram_bytes": 64 << 20, "disk_path": str(tmp_path / "cache")}},
           "params": {"n_neurons": 200_000, "chunk": 25_000, "seed": 3}}
    path = _write(tmp_path, cfg)
    out = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "run", str(path)],
                         capture_output=True, text=True, timeout=240, check=True)
    summary, _ = json.JSONDecoder().raw_decode(out.stdout)
    assert summary["reread_equal"] is True
    assert summary["origin_reads"]["second"] == 0 and summary["ram_hits_second_read"] == 8
    assert -56 < summary["mean_v_mV"] < -54  # uniform on [-60, -50)
    assert "dashboard at http://127.0.0.1:" in out.stderr
    info = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "info", str(tmp_path / "state.zarr"), "--json"],
                          capture_output=True, text=True, timeout=60, check=True)
    doc = json.loads(info.stdout)
    assert doc["kind"] == "neuron_state"
    v = doc["arrays"]["v"]
    assert v["shape"] == [200_000] and v["chunks"] == [25_000] and v["codec"] == "lossless"
    assert v["codecs"] == ["BytesCodec", "BloscCodec", "Crc32cCodec"]
    assert 0 < v["nbytes_stored"] < v["nbytes"] == 800_000
    plot = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "plot", str(tmp_path / "state.zarr"),
                           "--out", str(tmp_path / "plots")], capture_output=True, text=True, timeout=60, check=True)
    png = Path(plot.stdout.strip().splitlines()[-1])
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_info_on_missing_dataset_is_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", str(tmp_path / "nothing.zarr")]) == 2
    assert "no dataset at" in capsys.readouterr().err


def test_help_lists_commands() -> None:
    out = subprocess.run([sys.executable, "-m", "neurochunk.workflows.cli", "--help"], capture_output=True, text=True,
                         check=True)
    for cmd in ("run", "info", "plot", "cluster"):
        assert cmd in out.stdout

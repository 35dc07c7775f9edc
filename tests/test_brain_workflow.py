"""The brain workflow end to end: YAML -> cluster -> spikes dataset -> rates and PNGs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from neurochunk.workflows.cli import main
from neurochunk.workflows.config import ConfigError
from neurochunk.workflows.run import prepare, run_config

CONFIGS = Path(__file__).resolve().parents[1] / "workflows" / "configs"


def _config(tmp_path: Path, **params) -> Path:
    cfg = yaml.safe_load((CONFIGS / "brain-coba.yaml").read_text())
    cfg["store"]["url"] = str(tmp_path / "out")
    cfg["cluster"] = {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": ":0"}
    cfg["params"].update(params)
    cfg["progress"] = False
    path = tmp_path / "brain.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_brain_coba_config_runs_and_plots(tmp_path) -> None:
    summary = run_config(_config(tmp_path, duration_ms=300, record_v=[0, 3999]))
    assert summary["simulated_ms"] == pytest.approx(300)
    assert 5 < summary["rates_hz"]["E"] < 60 and 5 < summary["rates_hz"]["I"] < 60
    assert summary["n_spikes"] > 4000 * 5 * 0.3
    for png in summary["plots"]:
        assert Path(png).stat().st_size > 10_000
    assert summary["raster_png"].endswith("raster.png")
    # population rates recorded next to the spikes, consistent with them
    from neurochunk.stores import Dataset

    ds = Dataset.open(summary["spikes"], kind="spikes")
    rates = ds["rates"][:]
    assert rates.shape == (300, 2) and ds["rates"].attrs["populations"] == ["E", "I"]
    assert rates[:, 0].mean() == pytest.approx(summary["rates_hz"]["E"], rel=1e-3)
    # `neurochunk plot` draws the same from the dataset alone
    assert main(["plot", summary["spikes"], "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "rates.png").exists() and (tmp_path / "plots" / "v.png").exists()


def test_custom_network_errors_name_the_field(tmp_path) -> None:
    path = _config(tmp_path, network="custom", populations=[{"name": "A", "n": 10, "model": "lif_coba"}],
                   projections=[{"name": "AB", "pre": "A", "post": "B", "receptor": "ge", "weight": 1.0, "p": 0.1}])
    with pytest.raises(ConfigError, match="params.*projection 'AB'.*no population 'B'"):
        prepare(path)


def test_brain_run_publishes_steps_and_rates_on_the_dashboard(tmp_path) -> None:
    from neurochunk.cluster import connect
    from neurochunk.cluster.dashboard import METADATA_KEY

    client = connect({"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": "127.0.0.1:0"},
                     quiet=True)
    try:
        summary = run_config(_config(tmp_path, duration_ms=200), client=client)
        sim = client.get_metadata([METADATA_KEY, "values", "simulation"])
    finally:
        client.close()
    assert sim["steps_done"] == sim["n_steps"] == 2000 and sim["dt_ms"] == 0.1
    assert set(sim["rates_hz"]) == {"E", "I"}
    assert all(0 < r < 200 for r in sim["rates_hz"].values())
    assert summary["n_spikes"] > 0

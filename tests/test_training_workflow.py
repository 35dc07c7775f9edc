"""The training workflow end to end on a small config, its plots, and config errors."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from neurochunk.pipeline.catalog import FeatureCatalog
from neurochunk.stores import Dataset
from neurochunk.workflows.config import ConfigError
from neurochunk.workflows.registry import PLOTTERS, WORKFLOWS
from neurochunk.workflows.run import prepare, run_config


def _config(tmp_path, **params):
    cfg = {"workflow": "training", "store": {"url": str(tmp_path / "out"), "overwrite": True},
           "cluster": {"n_workers": 1, "threads_per_worker": 2, "processes": False, "dashboard_address": ":0"},
           "progress": False,
           "params": {"layers": [16, 32, 24], "samples": 96, "sample_chunk": 32, "steps": 20, "checkpoint_every": 5,
                      "codec": "bitround:10", "dictionary": {"layer": 2, "n_atoms": 16, "sparsity": 3, "epochs": 3},
                      **params}}
    path = tmp_path / "training.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_training_workflow_end_to_end(tmp_path):
    assert WORKFLOWS["training"] == PLOTTERS["activations"] == "neurochunk.workflows.training"
    summary = run_config(_config(tmp_path))
    acts = Dataset.open(summary["datasets"]["activations"], kind="activations")
    h1 = acts["h1"]
    assert h1.shape == (20, 96, 32) and h1.chunks == (5, 32, 32)
    assert h1.attrs["neurochunk_codec"]["spec"] == "bitround:10"
    from neurochunk.pipeline.temporal import states

    exact = states(Dataset.open(summary["datasets"]["model"]), 1).compute()
    rel = np.abs(h1[:] - exact)[exact > 0] / exact[exact > 0]
    assert rel.max() <= 2.0**-10  # streamed activations keep the codec's bound
    assert "bitround:10" in summary["info"] and "spikes1" in summary["info"]
    assert summary["spikes"] > 0 and summary["stored_states"] == {"checkpointed": 20, "every_step": 20}
    errors = summary["dictionary"]["error_by_epoch"]
    assert len(errors) == 3 and errors[-1] < errors[0]
    cat = FeatureCatalog.open(summary["datasets"]["catalog"])
    assert cat.n_atoms == 16 and cat.dictionaries[0]["layer"] == "h2" and cat.ds.attrs["dim"] == 24
    mean = Dataset.open(summary["datasets"]["dictionary"])["mean"][:]
    np.testing.assert_allclose(mean, acts["h2"][:].reshape(-1, 24).mean(axis=0), rtol=1e-3)
    top = summary["catalog_top3_of_last_step"]
    assert len(top) == 4 and all(len(r) == 3 and r[0][1] >= r[1][1] >= r[2][1] for r in top)
    from neurochunk.workflows.training import plot

    paths = plot(acts, str(tmp_path))
    assert {p.rsplit("/", 1)[1] for p in paths} == {"activations.png", "activations_hist.png", "spikes1_raster.png"}
    assert all((tmp_path / p.rsplit("/", 1)[1]).stat().st_size > 5000 for p in paths)
    (dict_png,) = plot(Dataset.open(summary["datasets"]["dictionary"]), str(tmp_path))
    assert dict_png.endswith("dictionary.png") and (tmp_path / "dictionary.png").stat().st_size > 5000


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(ConfigError, match="params.checkpoint_every"):
        prepare(_config(tmp_path, checkpoint_every=7))
    with pytest.raises(ConfigError, match="params.codec"):
        prepare(_config(tmp_path, codec="bitround:99"))
    with pytest.raises(ConfigError, match="params.dictionary.layer"):
        prepare(_config(tmp_path, dictionary={"layer": 3}))
    with pytest.raises(ConfigError, match="params.dictionary.n_atom"):
        prepare(_config(tmp_path, dictionary={"n_atom": 3}))


def test_shipped_configs_validate():
    from importlib.resources import files

    for name in ("training-small.yaml", "training-conv.yaml"):
        cfg, module = prepare(str(files("neurochunk.workflows") / "configs" / name))
        assert cfg["params"]["steps"] % cfg["params"]["checkpoint_every"] == 0 and module.PARAMS

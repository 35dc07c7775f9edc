"""The connectomics workflow end to end on the neuroproof sample, its config checks and the volume plot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from neurochunk.workflows.cli import main
from neurochunk.workflows.config import ConfigError
from neurochunk.workflows.run import prepare, run_config

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "neuroproof_training_sample2"


def _config(tmp_path: Path, **params) -> Path:
    cfg = yaml.safe_load((REPO / "workflows" / "configs" / "connectomics-neuroproof.yaml").read_text())
    cfg["store"]["url"] = str(tmp_path / "out")
    cfg["params"].update(params)
    cfg["progress"] = False
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.skipif(not DATA.exists(), reason="neuroproof sample not present")
def test_workflow_on_neuroproof(tmp_path: Path) -> None:
    from distributed import Client, LocalCluster

    cfg = _config(tmp_path, image=str(DATA / "grayscale_maps"), labels=str(DATA / "groundtruth.h5.gz") + ":stack")
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        summary = run_config(cfg, client=client)
    assert summary["shape"] == (250, 250, 250)
    assert summary["n_components"] == 554  # cc3d finds 554 26-connected pieces of the 526 bodies
    assert 0 < summary["kept_after_dust"] < summary["n_components"]
    png = Path(summary["plots"][0])
    assert png.exists() and png.stat().st_size > 20_000
    out = tmp_path / "out"
    assert main(["plot", str(out / "image.zarr"), "--out", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "image_slices.png").exists()
    from matplotlib.image import imread

    img = imread(png)
    assert img.shape[2] in (3, 4) and np.std(img[..., :3]) > 0.05  # an image, not a blank canvas


def test_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="params.voxel_size"):
        prepare(_config(tmp_path, voxel_size=[10, 10]))
    with pytest.raises(ConfigError, match="params.connectivity"):
        prepare(_config(tmp_path, connectivity=8))
    for name in ("connectomics-neuroproof.yaml", "connectomics-synthetic.yaml"):
        cfg, module = prepare(REPO / "workflows" / "configs" / name)
        assert module.__name__.endswith("connectomics") and cfg["params"]["connectivity"] == 26

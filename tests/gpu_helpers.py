"""The GPU test files' common start: cupy and a CUDA device, or the whole module is skipped."""

from __future__ import annotations

from typing import Any

import pytest


def require_cupy(devices: int = 1) -> Any:
    """The cupy module when it imports and sees at least ``devices`` CUDA devices; else skip the calling module."""
    cp = pytest.importorskip("cupy")
    try:
        count = cp.cuda.runtime.getDeviceCount()
    except cp.cuda.runtime.CUDARuntimeError:
        count = 0
    if count < devices:
        pytest.skip(f"needs {devices} CUDA device(s), found {count}", allow_module_level=True)
    return cp

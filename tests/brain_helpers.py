"""Shared helpers of the brain tests: the Brian2 reference venv and a small LocalCluster."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BRIAN2_PY = ROOT / ".venv-brian2" / "bin" / "python"
BRIAN2_REF = ROOT / "benchmarks" / "brian2_ref.py"


def brian2_available() -> bool:
    return BRIAN2_PY.exists()


def start_brian2(cfg: dict[str, Any]) -> subprocess.Popen:
    """Start a Brian2 reference run in the background (skip the test when the venv is absent)."""
    if not brian2_available():
        pytest.skip(f"Brian2 reference venv missing at {BRIAN2_PY}; run bash .ci/setup-brian2.sh")
    return subprocess.Popen([str(BRIAN2_PY), str(BRIAN2_REF), json.dumps(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish_brian2(proc: subprocess.Popen, timeout: float = 300) -> dict[str, Any]:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"Brian2 reference run failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])

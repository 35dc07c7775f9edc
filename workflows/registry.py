"""The workflows ``neurochunk run`` knows, imported only when used.

A workflow module defines ``PARAMS`` (a :class:`~neurochunk.workflows.config.Section`)
and ``run(config, client) -> dict`` (a summary to print). It may define
``plot(dataset, out_dir) -> list[str]`` for ``neurochunk plot``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["WORKFLOWS", "PLOTTERS", "workflow_module"]

WORKFLOWS: dict[str, str] = {
    "demo": "neurochunk.workflows.demo",
    "brain": "neurochunk.workflows.brain",
    "connectomics": "neurochunk.workflows.connectomics",
    "memories": "neurochunk.workflows.memories",
    "training": "neurochunk.workflows.training",
}

# dataset kind -> module whose ``plot(dataset, out_dir)`` draws it
PLOTTERS: dict[str, str] = {
    "spikes": "neurochunk.workflows.brain",
    "volume": "neurochunk.workflows.connectomics",
    "memory_bank": "neurochunk.workflows.memories",
    "activations": "neurochunk.workflows.training",
    "neuron_state": "neurochunk.workflows.demo",
}


def workflow_module(name: str) -> ModuleType:
    """Import the module of workflow ``name``."""
    if name not in WORKFLOWS:
        raise KeyError(f"unknown workflow {name!r}; known: {', '.join(sorted(WORKFLOWS))}")
    try:
        return importlib.import_module(WORKFLOWS[name])
    except ModuleNotFoundError as exc:
        if exc.name == WORKFLOWS[name]:
            raise KeyError(f"workflow {name!r} is not available in this build") from None
        raise

"""Writing the workflows' plots: one PNG per figure, laid out and closed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["save_figure"]


def save_figure(fig: Any, out_dir: str | Path, name: str, dpi: int = 120) -> str:
    """Lay out ``fig``, write it to ``out_dir/name`` as a PNG, close it, and return the file's path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = str(Path(out_dir) / name)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path

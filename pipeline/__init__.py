"""Lazy Dask graphs over stored datasets: State, Step, Runner, chunk-aligned I/O and commits.

``pipeline`` turns ``kernels`` (pure chunk functions) and ``stores`` (datasets)
into graphs; where they run is ``cluster``'s business.
"""

from .diagnostics import tier_stats
from .io import check_aligned, commit_arrays, read_array, regular_chunks, write_array
from .progress import compute_with_progress
from .runner import BatchReport, Runner
from .state import State
from .step import Step

__all__ = ["BatchReport", "Runner", "State", "Step", "check_aligned", "compute_with_progress", "commit_arrays", "read_array",
           "regular_chunks", "tier_stats", "write_array"]

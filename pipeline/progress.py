"""A console progress bar over the chunk tasks of a graph running on a cluster."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["compute_with_progress"]


def compute_with_progress(client: Any, collection: Any, desc: str, enabled: bool = True) -> Any:
    """Compute ``collection`` on ``client``, with a tqdm bar (stderr) over its output chunks.

    The collection is persisted first, so the bar advances as each output chunk
    (a stored chunk, a block of a result) finishes; the value is then gathered.
    """
    from distributed import as_completed, futures_of
    from tqdm.auto import tqdm

    if client is None:
        import dask

        return dask.compute(collection)[0]
    persisted = client.persist(collection)
    futures = futures_of(persisted)
    with tqdm(total=len(futures), desc=desc, unit="chunk", file=sys.stderr, disable=not enabled,
              dynamic_ncols=True, leave=True) as bar:
        for _ in as_completed(futures):
            bar.update(1)
    return client.compute(persisted, sync=True)

"""Id lookup without one Python object per id: sorted 64-bit hashes, confirmed on the strings.

``IdIndex(ids).lookup(query)`` returns the row of each query id (``-1`` if absent). Hashes are
computed chunk by chunk, so building the index over 5 million Arrow strings never holds more
than one chunk of Python strings at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def hash_ids(values: np.ndarray) -> np.ndarray:
    """64-bit hashes of an object array of strings, ``(N,)`` uint64."""
    return pd.util.hash_array(np.asarray(values, dtype=object), categorize=False)


class IdIndex:
    """Row lookup for a column of string ids (Arrow array / chunked array / NumPy objects)."""

    def __init__(self, ids, chunk: int = 1_000_000) -> None:
        if isinstance(ids, np.ndarray):
            ids = pa.array(ids, type=pa.string())
        if isinstance(ids, pa.ChunkedArray):
            ids = ids.combine_chunks()
        self.ids = ids.cast(pa.string())
        n = len(self.ids)
        hashes = np.empty(n, dtype=np.uint64)
        for start in range(0, n, chunk):
            part = self.ids.slice(start, chunk).to_numpy(zero_copy_only=False)
            hashes[start : start + len(part)] = hash_ids(part)
        self.order = np.argsort(hashes, kind="stable")
        self.sorted = hashes[self.order]

    def __len__(self) -> int:
        return len(self.ids)

    def lookup(self, query: np.ndarray) -> np.ndarray:
        """Row of each id in ``query`` (object array of str), ``-1`` where absent."""
        query = np.asarray(query, dtype=object)
        out = np.full(len(query), -1, dtype=np.int64)
        if len(self) == 0 or len(query) == 0:
            return out
        h = hash_ids(query)
        lo = np.searchsorted(self.sorted, h, side="left")
        hi = np.searchsorted(self.sorted, h, side="right")
        hit = hi > lo
        cand = self.order[np.minimum(lo, len(self.sorted) - 1)]
        got = self.ids.take(cand[hit]).to_numpy(zero_copy_only=False)
        same = got == query[hit]
        rows = np.flatnonzero(hit)
        out[rows[same]] = cand[hit][same]
        # a 64-bit hash shared by several ids: check the rest of that run
        for r in rows[~same][(hi - lo)[rows[~same]] > 1]:
            for k in range(lo[r] + 1, hi[r]):
                if self.ids[int(self.order[k])].as_py() == query[r]:
                    out[r] = self.order[k]
                    break
        return out

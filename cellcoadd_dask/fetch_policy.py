"""How the fetch layer retries, times out, batches and coalesces: read from dask's configuration."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FetchPolicy"]


@dataclass(frozen=True)
class FetchPolicy:
    """How the fetch layer (``fetch_ranges``) retries, times out, batches and coalesces.

    Read from dask's configuration (``cellcoadd.fetch.<name>``) at each call, so
    ``dask.config.set({"cellcoadd.fetch.timeout": 5})`` changes it.

    Attributes
    ----------
    retries
        Attempts after the first for ranges that failed transiently (timeouts, dropped
        connections, HTTP 5xx and 429, S3 SlowDown).
    backoff
        First wait between attempts in seconds; doubled each time (with jitter) up to
        ``max_backoff``.
    max_backoff
        Longest wait between attempts.
    timeout
        Seconds one request may take (connecting, waiting and reading the body).
    concurrency
        Most requests in flight at once per call.
    coalesce_gap
        Ranges of one call separated by at most this many bytes are fetched as one request
        (the bytes between them are read and dropped).  The default, 0, merges only ranges
        that touch: the tiles of a row of cells sit back to back in the heap, so a row is one
        request, and no byte of an unwanted tile is ever read.  A positive gap trades bytes
        for requests (on a high-latency link, a gap of a few tiles can be worth it).
    coalesce_share
        Beyond ``coalesce_gap``, the smallest gaps of a call are read too while all the gap
        bytes read stay within this share of the bytes wanted (default 0: none).
    reduction_share
        The same share for reads that reduce whole blocks as they are decoded
        (:func:`~cellcoadd_dask.cell_statistics`): the default, 0.125, reads each block of a
        tract in one request instead of one per row of cells (the border tiles between rows,
        about 10 % of the bytes, are read and dropped).  0 reads exactly the tiles wanted.
    """

    retries: int = 4
    backoff: float = 0.1
    max_backoff: float = 2.0
    timeout: float = 30.0
    concurrency: int = 16
    coalesce_gap: int = 0
    coalesce_share: float = 0.0
    reduction_share: float = 0.125

    @classmethod
    def current(cls) -> FetchPolicy:
        """The policy set in dask's configuration (defaults above)."""
        import dask

        values = {}
        for name in ("retries", "backoff", "max_backoff", "timeout", "concurrency", "coalesce_gap", "coalesce_share",
                     "reduction_share"):
            value = dask.config.get(f"cellcoadd.fetch.{name}", None)
            if value is not None:
                values[name] = type(getattr(cls, name))(value)
        return cls(**values)

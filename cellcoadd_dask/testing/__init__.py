"""Test and tutorial data: a reference corpus of cell coadds written by lsst-images.

`corpus_path` and `corpus_dir` give local paths of coadd files written through the public API of
``lsst-images`` (the reference implementation of the data model), built on first use and cached
between runs.  They need ``lsst-images`` installed (``pip install 'cellcoadd-dask[test]'``).
`cellcoadd_dask.testing.servers` starts real local S3 and HTTP byte-range servers.

Nothing here is imported by the rest of the package.
"""

from __future__ import annotations

from .corpus import CORPUS_CACHE_ENV, PARTS, CorpusError, build_corpus, corpus_cache_root, corpus_dir, corpus_path

__all__ = [
    "CORPUS_CACHE_ENV",
    "PARTS",
    "CorpusError",
    "build_corpus",
    "corpus_cache_root",
    "corpus_dir",
    "corpus_path",
]

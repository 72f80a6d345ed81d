"""The image of an opened coadd pickles (pickle and cloudpickle) and computes after unpickling."""

from __future__ import annotations

import pickle

import cloudpickle
from oracle import assert_identical, lsst_read

import cellcoadd_dask as ccd

from .archives import Archive, oracle_path
from .library import Library
from .sources import Source


def test_image_pickles_and_computes(archive: Archive, source: Source, library: Library) -> None:
    published = library.published(archive, source)
    coadd = ccd.open_coadd(published.url, **published.open_kwargs())
    expected = lsst_read(oracle_path(archive)).image.array
    for dumps in (pickle.dumps, cloudpickle.dumps):
        array = pickle.loads(dumps(coadd.image.array))
        assert_identical(array.compute(), expected, f"{archive} from {source}, {dumps.__module__}")

"""Sky projections are safe to use from many threads at once (the AST library is not)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from starlink import Ast

import cellcoadd_dask as ccd
from cellcoadd_dask import projection
from cellcoadd_dask.testing import corpus_path


def test_parsing_and_transforming_in_many_threads_does_not_crash(corpus: object) -> None:
    # In a child process: a crash there fails this test instead of killing the session.
    code = textwrap.dedent(
        """
        import pickle
        from concurrent.futures import ThreadPoolExecutor

        import numpy as np

        import cellcoadd_dask as ccd
        from cellcoadd_dask.testing import corpus_path

        projection = ccd.open_coadd(corpus_path("tract/patch_0_0.fits")).projection
        blob = pickle.dumps(projection)

        def work(n):
            for _ in range(20):
                fresh = pickle.loads(blob)  # re-parses its AST text on first use
                sky = fresh.pixel_to_sky(x=np.arange(50.0) + n, y=np.arange(50.0))
                back = fresh.sky_to_pixel(sky)
                assert np.allclose(back.x, np.arange(50.0) + n)
            return n

        with ThreadPoolExecutor(8) as pool:
            assert sorted(pool.map(work, range(32))) == list(range(32))
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stderr[-2000:])


def test_every_parse_holds_the_one_ast_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = ccd.open_coadd(corpus_path("tract/patch_0_0.fits")).projection.to_json()
    real_channel = Ast.Channel
    held: list[bool] = []

    def channel(*args: object) -> object:
        held.append(projection.AST_LOCK._is_owned())  # type: ignore[attr-defined]
        return real_channel(*args)

    monkeypatch.setattr(Ast, "Channel", channel)
    projection.SkyProjection.from_json(tree)
    assert held == [True]

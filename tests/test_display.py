"""Rich display: ``_repr_html_()`` and ``describe()`` of coadds, planes, masks, PSFs and Datasets.

Everything shown comes from metadata the opened archive already holds, so rendering never
reads a byte (checked on the HTTP server's own log and with ``fetch_stats``); the content is
checked against the coadd's own model, and the HTML is parsed to check that its tags balance.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import cellcoadd_dask as ccd
from cellcoadd_dask.testing import corpus_path

SECRET = "X-Amz-Signature=0123456789abcdefSECRET&X-Amz-Credential=AKIDEXAMPLE"
X = "\N{MULTIPLICATION SIGN}"
VOID = {"br", "hr", "img", "meta", "link", "input", "col", "wbr"}


class BalanceChecker(HTMLParser):
    """Parses an HTML fragment, checking that every tag is closed in order; collects the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.chunks: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    @property
    def text(self) -> str:
        return " ".join(self.chunks)


def parse(fragment: str) -> BalanceChecker:
    """Parse an HTML fragment and fail if its tags do not balance."""
    checker = BalanceChecker()
    checker.feed(fragment)
    checker.close()
    assert not checker.errors, checker.errors
    assert not checker.stack, f"unclosed tags: {checker.stack}"
    return checker


def renderings(obj: Any) -> Iterator[tuple[str, str]]:
    """``("text", describe())`` and ``("html", text of the parsed _repr_html_())``."""
    yield "text", obj.describe()
    yield "html", parse(obj._repr_html_()).text


def plane_names(coadd: ccd.CellCoadd) -> list[str]:
    names = ["image", "variance", "mask", "psf"]
    names += [f"mask_fractions/{k}" for k in coadd.mask_fractions]
    names += [f"noise_realizations/{n}" for n in range(len(coadd.noise_realizations))]
    return names


def assert_mask_planes_shown(schema: ccd.MaskSchema, shown: str) -> None:
    for name, description in schema.descriptions().items():
        assert name in shown
        assert description in shown


@pytest.fixture(scope="module")
def synthetic(reference_dir: Path) -> ccd.CellCoadd:
    return ccd.open_coadd(reference_dir / "synthetic_3x3.fits")


# ----------------------------------------------------------------------------------- content


def test_coadd_shows_identity_geometry_planes_and_mask_planes(synthetic: ccd.CellCoadd) -> None:
    assert len(synthetic.mask_fractions) == 2 and len(synthetic.noise_realizations) == 2
    for kind, shown in renderings(synthetic):
        assert "band r" in shown, kind
        assert str(synthetic.bbox) in shown and f"450 {X} 450 px" in shown, kind
        assert f"{synthetic.skymap}, {synthetic.tract}" in shown
        assert f"id {synthetic.patch.id}, index (y=1, x=2)" in shown and str(synthetic.patch.inner_bbox) in shown
        for name in plane_names(synthetic):
            assert name in shown, (kind, name)
        assert len(synthetic.mask.schema.names) == 10
        assert_mask_planes_shown(synthetic.mask.schema, shown)
        assert "RA 150.0125" in shown and "Dec +1.9625" in shown
        assert "HDU IMAGE" in shown and "HDU NOISE_REALIZATIONS/1" in shown
        assert "base_PsfFlux_instFlux" in shown and "sky_spline (SPLINE)" in shown


def test_missing_cells_are_listed_and_mapped(synthetic: ccd.CellCoadd) -> None:
    (missing,) = synthetic.bounds.missing
    assert (missing.i, missing.j) == (2, 3)
    text = synthetic.describe()
    assert "missing        1: (i=2, j=3)" in text
    assert "with data      8 of 9" in text
    # Row i=2 of the 6x6 patch grid: outside, data, data, missing, outside, outside.
    assert "    2  . # # x . ." in text
    page = synthetic._repr_html_()
    assert "<svg" in page and "<script" not in page.lower()
    assert "cell (i=2, j=3): missing cells" in parse(page).text
    assert "patch inner region" in page


def test_image_mask_and_psf_describe_themselves(synthetic: ccd.CellCoadd) -> None:
    for kind, shown in renderings(synthetic.image):
        assert str(synthetic.bbox) in shown and "float32" in shown and "nJy" in shown, kind
        assert f"450 {X} 450 px per chunk, 1 chunk" in shown and "HDU IMAGE" in shown
    for _, shown in renderings(synthetic.mask):
        assert str(synthetic.bbox) in shown and "uint8" in shown
        assert_mask_planes_shown(synthetic.mask.schema, shown)
    for _, shown in renderings(synthetic.psf):
        assert f"25 {X} 25 px" in shown and "[y=-12:13, x=-12:13]" in shown
        assert "1: (i=2, j=3)" in shown and f"3 {X} 3 = 9 cells" in shown


def test_cutout_shows_its_own_bbox_and_cells(synthetic: ccd.CellCoadd) -> None:
    cut = synthetic.absolute[1470:1530, 1920:1980]
    for kind, shown in renderings(cut):
        assert "[y=1470:1530, x=1920:1980]" in shown and f"60 {X} 60 px" in shown, kind
        assert f"2 {X} 2 = 4 cells" in shown and "(i=2, j=3)" in shown
        assert "whole stored arrays" in shown


def test_many_mask_planes_over_two_hdus(reference_dir: Path) -> None:
    coadd = ccd.open_coadd(reference_dir / "many_planes.fits")
    assert len(coadd.mask.schema.names) == 40
    for kind, shown in renderings(coadd):
        assert_mask_planes_shown(coadd.mask.schema, shown)
        assert "HDU MASK, HDU MASK,2" in shown and "MASK,2 bit 8" in shown, kind
        assert "band —" in shown and "[y=-16:0, x=104:120]" in shown
    assert "provenance            none" in coadd.describe()
    page = coadd.mask._repr_html_()
    assert_mask_planes_shown(coadd.mask.schema, parse(page).text)


def test_json_archive_planes_are_inline(reference_dir: Path) -> None:
    coadd = ccd.open_coadd(reference_dir / "synthetic_3x3_cutout.json")
    for kind, shown in renderings(coadd):
        assert "JSON archive" in shown and "inline (JSON)" in shown, kind
        assert str(coadd.bbox) in shown
        for name in plane_names(coadd):
            assert name in shown
        assert_mask_planes_shown(coadd.mask.schema, shown)
        assert "(i=2, j=3)" in shown


def test_compression_is_shown_once_the_headers_are_loaded(reference_dir: Path) -> None:
    coadd = ccd.open_coadd(reference_dir / "synthetic_3x3_lossy.fits")
    assert "tile-compressed, codec —" in coadd.describe()
    coadd.load_metadata()
    text = coadd.describe()
    assert "RICE_1, quantized (SUBTRACTIVE_DITHER_2, seed 77)" in text
    assert f"GZIP_2, lossless, tiles 150 {X} 150" in text
    assert "codec —" not in text


def test_zarr_archive_names_its_arrays_and_their_codecs_once_opened(
    synthetic: ccd.CellCoadd, tmp_path: Path
) -> None:
    coadd = ccd.open_coadd(synthetic.write_zarr(tmp_path / "synthetic.zarr"))
    text = coadd.describe()
    assert "Zarr archive" in text and "zarr:/image" in text and "zarr:/mask" in text
    image_row = next(line for line in text.splitlines() if line.strip().startswith("image "))
    assert image_row.rstrip().endswith("—")
    coadd.image.array[:10, :10].compute()
    image_row = next(line for line in coadd.describe().splitlines() if line.strip().startswith("image "))
    assert not image_row.rstrip().endswith("—") and "bytes" not in image_row
    parse(coadd._repr_html_())


def test_html_escapes_what_it_shows() -> None:
    schema = ccd.MaskSchema([ccd.MaskPlane("BAD", "<script>alert('x')</script> & more")])
    mask = ccd.Mask(np.zeros((4, 4, 1), dtype="uint8"), schema=schema, bbox=ccd.Box.factory[0:4, 0:4])
    page = mask._repr_html_()
    assert "<script" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; more" in page
    assert "<script>alert('x')</script> & more" in parse(page).text


# ----------------------------------------------------------------------------------- xarray


def test_coadd_dataset_summary(synthetic: ccd.CellCoadd) -> None:
    ds = synthetic.to_xarray()
    summary = ds.cellcoadd.summary()
    assert ds.cellcoadd.describe() == summary.describe()
    for kind, shown in renderings(summary):
        assert "band r" in shown and str(synthetic.bbox) in shown, kind
        for name in ("image", "mask", "variance", "mask_fractions", "noise_realizations", "psf"):
            assert name in shown
        assert_mask_planes_shown(synthetic.mask.schema, shown)
        assert "(i=2, j=3)" in shown and "nJy2" in shown


def test_tract_summary_maps_the_patches(corpus: Path) -> None:
    files = [corpus / "tract" / f"patch_{y}_{x}.fits" for y, x in ((0, 0), (0, 1), (1, 0))]
    ds = ccd.open_tract([str(p) for p in files])
    text = ds.cellcoadd.describe()
    assert text.startswith("Tract  band i · tract 7 (tiny_tract_v1) · 3 patches")
    assert "[y=0:120, x=0:120]" in text and f"cell shape          20 {X} 20 px" in text
    assert "    1  # ." in text and "    0  # #" in text
    for var in ("image", "mask", "variance", "mask_fractions", "noise_realizations"):
        assert var in text
    assert "nJy2" in text and "float32" in text
    for name in ds["mask"].attrs["flag_meanings"].split():
        assert name in text
    shown = parse(ds.cellcoadd.summary()._repr_html_()).text
    assert "patch (y=1, x=1): not given (fill values, NO_DATA)" not in shown  # absent patches are not drawn
    assert "patch (y=1, x=0): patches given" in shown and "(y=0, x=1)" in shown


# ----------------------------------------------------------------------------------- no I/O


def test_rendering_a_remote_coadd_fetches_nothing_and_hides_secrets(http_server: Any, reference_dir: Path) -> None:
    url = http_server.publish(reference_dir / "synthetic_3x3.fits")
    coadd = ccd.open_coadd(f"{url}?{SECRET}")
    ds = xr.open_dataset(f"{url}?{SECRET}", engine="cellcoadd")
    rebuilt = coadd.to_xarray().cellcoadd.to_coadd()
    objects = [coadd, coadd.image, coadd.mask, coadd.psf, coadd.variance, coadd.absolute[1300:1500, 1700:1800],
               coadd.absolute[1300:1500, 1700:1800].mask, rebuilt]
    mark = http_server.mark()
    with ccd.fetch_stats() as stats:
        shown = [obj._repr_html_() for obj in objects] + [obj.describe() for obj in objects]
        shown += [ds.cellcoadd.summary()._repr_html_(), ds.cellcoadd.describe()]
    assert http_server.requests_since(mark, name=url).ranges == []
    assert len(http_server.requests_since(mark, name=url)) == 0
    assert (stats.calls, stats.requests, stats.nbytes) == (0, 0, 0)
    for text in shown:
        assert "SECRET" not in text and "AKIDEXAMPLE" not in text
    assert f"{url}?***" in coadd.describe() and html.escape(f"{url}?***") in coadd._repr_html_()


def test_rendering_a_remote_tract_fetches_nothing_and_hides_secrets(http_server: Any) -> None:
    urls = [http_server.publish(corpus_path(f"tract/patch_{y}_{x}.fits")) for y, x in ((0, 0), (0, 1), (1, 0))]
    ds = ccd.open_tract([f"{u}?{SECRET}" for u in urls])
    mark = http_server.mark()
    with ccd.fetch_stats() as stats:
        page = ds.cellcoadd.summary()._repr_html_()
        text = ds.cellcoadd.describe()
        cut = ds.sel(y=slice(10, 69)).cellcoadd.describe()
    assert len(http_server.requests_since(mark)) == 0
    assert (stats.calls, stats.requests) == (0, 0)
    for shown in (page, text, cut):
        assert "SECRET" not in shown and "AKIDEXAMPLE" not in shown
    parse(page)
    for u in urls:
        assert f"{u}?***" in text
    assert "[y=10:70, x=0:120]" in cut

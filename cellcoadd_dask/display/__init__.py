"""Rich display from metadata alone: HTML (``_repr_html_``) and text (``describe()``) reports.

:mod:`.facts` gathers what the metadata says (identity, geometry, cells, planes, storage),
:mod:`.reports` arranges it for coadds, planes, masks and PSFs, :mod:`.dataset` for the xarray
views of a coadd or a tract, and :mod:`.render` lays a report out as HTML or text.  Nothing
here reads a pixel or makes a request.
"""

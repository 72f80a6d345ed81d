"""Zarr v3 archives of cell coadds: the lsst-images ``cell_coadd`` tree over Zarr arrays."""

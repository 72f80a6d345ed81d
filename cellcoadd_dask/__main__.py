"""``python -m cellcoadd_dask``: the ``cellcoadd-dask`` command line."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())

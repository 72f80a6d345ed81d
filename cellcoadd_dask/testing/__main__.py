"""``python -m cellcoadd_dask.testing OUTDIR [base] [patch]``: write the corpus into a directory."""

from .corpus import main

raise SystemExit(main())

"""Mutation fuzzing of every archive (FITS, JSON, Zarr layout 2), shared by ``test_fuzz.py`` and ``make fuzz``.

Each case is a mutated copy of an unmutated archive, read in a reused child process
(`pool.FuzzPool`) capped at 2 GiB of address space and 5 s of wall time, and classified:
``ok`` (reads, and values equal the unmutated archive's except where the mutated bytes allow),
``typed`` (a `cellcoadd_dask.CellCoaddError`), ``untyped`` (another exception), ``crash``
(abnormal exit), ``hang`` (over 5 s), ``memory`` (`MemoryError`, or over the cap) or ``wrong``
(read without error, values changed outside what the mutation touched).

Long runs: ``PYTHONPATH=tests python -m fuzz -n 20000`` (``make fuzz N=20000``).
"""

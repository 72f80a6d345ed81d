"""The lsst-images JSON archive: the whole tree, arrays inline."""

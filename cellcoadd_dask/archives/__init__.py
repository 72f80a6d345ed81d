"""Archive formats: each sub-package reads (and writes) one on-disk form of a cell coadd."""

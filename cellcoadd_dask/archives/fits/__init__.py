"""The lsst-images FITS container: headers, index, tile tables, codecs, reader."""

"""The archive conformance suite: every archive (`archives.ARCHIVES`) over every byte source (`sources`)."""

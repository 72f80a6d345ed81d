"""The byte sources of the conformance suite: where a published archive is read from.

Each `Source` publishes a local archive (one file, or a directory for a store) under a unique
key and gives back the URL and storage options to open it with.  Sources are real servers on
loopback (nginx, SeaweedFS, the fault proxy in front of nginx) or fsspec's in-process memory
filesystem.
"""

from __future__ import annotations

import dataclasses
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faultproxy import HttpFaultProxy
    from servers import HttpServer, LoggedRequest, S3Server

__all__ = [
    "SOURCE_NAMES",
    "FaultySource",
    "HttpSource",
    "LocalSource",
    "MemorySource",
    "PresignedSource",
    "Published",
    "S3Source",
    "Source",
]

SOURCE_NAMES = ("local", "memory", "http", "s3", "presigned", "faulty")
"""Every byte source, in test-id order."""


@dataclasses.dataclass(frozen=True)
class Published:
    """An archive published on a source.

    Attributes
    ----------
    url
        What to open.
    storage_options
        Passed to the reader (`None` when the URL needs none).
    local
        The local archive it is a copy of.
    key
        The unique key it was published under (``<token>/<file name>``).
    """

    url: str
    storage_options: dict[str, Any] | None
    local: Path
    key: str

    @property
    def nbytes(self) -> int:
        """Size of the archive: the file, or every file of the store."""
        if self.local.is_dir():
            return sum(p.stat().st_size for p in self.local.rglob("*") if p.is_file())
        return self.local.stat().st_size

    def open_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `ccd.open_coadd` for this archive."""
        return {} if self.storage_options is None else {"storage_options": self.storage_options}


def _files(local: Path) -> list[tuple[Path, str]]:
    """``(file, relative key)`` of every file of a store, or of the one object."""
    if local.is_dir():
        return [(p, p.relative_to(local).as_posix()) for p in sorted(local.rglob("*")) if p.is_file()]
    return [(local, "")]


class Source:
    """Where archives are read from.

    Attributes
    ----------
    name
        Test id.
    stores
        Whether a store (a directory of objects) can be read from this source.
    """

    name = "?"
    stores = True

    def publish(self, local: Path) -> Published:
        """Publish the archive ``local`` under a new unique key; return how to open it."""
        key = f"{uuid.uuid4().hex[:10]}/{local.name}"
        url, options = self._put(local, key)
        return Published(url, options, local, key)

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.name


class LocalSource(Source):
    """Local paths: a copy under ``root``."""

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        target = self.root / key
        target.parent.mkdir(parents=True)
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copyfile(local, target)
        return str(target), None


class MemorySource(Source):
    """fsspec's memory filesystem (``memory://``), in this process only."""

    name = "memory"

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        import fsspec

        fs = fsspec.filesystem("memory")
        base = f"/conformance/{key}"
        for path, relative in _files(local):
            fs.pipe_file(f"{base}/{relative}" if relative else base, path.read_bytes())
        return f"memory://{base}", None


class HttpSource(Source):
    """nginx: byte ranges, and an access log to compare the fetch layer's counts with."""

    name = "http"

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        target = self.server.root / key
        target.parent.mkdir(parents=True)
        # Copies, not hard links: a link changes the source's ctime, which pinned readers see as a change.
        if local.is_dir():
            shutil.copytree(local, target)
        else:
            shutil.copyfile(local, target)
        return f"{self.server.url}/{key}", None

    def mark(self) -> int:
        """A position in nginx's access log."""
        return self.server.mark()

    def requests_since(self, mark: int, published: Published) -> list[LoggedRequest]:
        """The requests nginx served since ``mark`` for the archive (any of its objects)."""
        return [r for r in self.server.requests_since(mark) if r.name == published.key
                or r.name.startswith(published.key + "/")]


class FaultySource(HttpSource):
    """nginx behind the fault proxy: the first requests of every test are reset, then retried."""

    name = "faulty"
    resets = 2

    def __init__(self, proxy: HttpFaultProxy) -> None:
        super().__init__(proxy.server)
        self.proxy = proxy

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        url, options = super()._put(local, key)
        return self.proxy.url_for(url), options

    def arm(self) -> None:
        """Reset the next `resets` requests through the proxy (whatever their target)."""
        self.proxy.clear_faults()
        self.proxy.reset(times=self.resets)

    def disarm(self) -> None:
        """Disarm what `arm` set and did not fire."""
        self.proxy.clear_faults()


class S3Source(Source):
    """SeaweedFS through s3fs, with the server's credentials in the storage options."""

    name = "s3"

    def __init__(self, server: S3Server) -> None:
        self.server = server

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        base = f"{self.server.bucket}/{key}"
        files = _files(local)
        # One call for every object: s3fs uploads them concurrently.
        self.server.filesystem().put([str(p) for p, _ in files], [f"{base}/{r}" if r else base for _, r in files])
        return f"s3://{base}", self.server.storage_options


class PresignedSource(S3Source):
    """A presigned GET URL of an object of SeaweedFS: plain HTTP, no credentials, one object only.

    A presigned URL signs one object, so a store (many objects) cannot be read this way
    (`cellcoadd_dask.archives.zarr.store`): the suite does not pair stores with this source.
    """

    name = "presigned"
    stores = False

    def _put(self, local: Path, key: str) -> tuple[str, dict[str, Any] | None]:
        if local.is_dir():
            raise ValueError(f"a presigned URL signs one object, not the store {local}")
        url, _ = super()._put(local, key)
        return self.server.filesystem().url(url.removeprefix("s3://"), expires=3600), None

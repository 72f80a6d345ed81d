"""The loopback servers of the fixtures (nginx and SeaweedFS), from `cellcoadd_dask.testing.servers`.

Kept so that ``from servers import ...`` in the tests goes on working; the machinery lives in
the package, where tutorials and users can start the same servers.
"""

from __future__ import annotations

from cellcoadd_dask.testing.servers import *  # noqa: F403
from cellcoadd_dask.testing.servers import __all__ as __all__

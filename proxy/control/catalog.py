"""What the data plane reads: the live mapping from (Host, path) to a ``Target``.

Layer 3. The control-plane service keeps a ``Catalog`` current; the data
plane only calls ``resolve``. Resolution order (reference section 14.1):

1. Host equals a registered custom domain: the longest matching
   ``apiMappingKey`` prefix of the path picks API and stage.
2. Host is ``{apiId}.execute-api.<anything>``: that API; the first path
   segment is the stage.
3. Otherwise the default API (the only one, or the configured one); the first
   path segment is the stage.
"""

from __future__ import annotations

from typing import Protocol

from proxy.control.model import Target


class Catalog(Protocol):
    def resolve(self, host: str, path: str) -> Target:
        """Return the target for a new connection.

        Args:
            host: the request's Host header, port included if sent.
            path: the request path without the query string.

        Raises:
            NotFoundException: no API, stage or deployed stage matches.
        """
        ...

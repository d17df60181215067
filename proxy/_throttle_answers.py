"""What ``Admission.take_one`` answers: shared by ``proxy.throttle`` and both bucket twins.

Layer 1 (constants only). A module of its own so that neither twin imports its
facade ``proxy.throttle`` nor the other twin: the compiled ``proxy._throttle``
reads these at import into C ints, the pure ``proxy._pythrottle`` uses them as
they are, and ``proxy.throttle`` names the refusing level from them.
"""

from __future__ import annotations

from typing import Final

ADMITTED: Final = 0
"""Every bucket asked had a token; each gave one."""
BY_ROUTE: Final = 1
"""The route key's bucket refused (level ``"route"`` or ``"stage"``, after where its limit came from)."""
BY_ACCOUNT: Final = 2
"""The account bucket refused; the route's token was given back."""
BY_EXTRA: Final = 3
"""The extra bucket (new connections, for ``$connect``) refused; the others' tokens were given back."""

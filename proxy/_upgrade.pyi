"""Type stub of the compiled upgrade fast paths (ext/_upgrade.pyx); same API as ``proxy._pyupgrade``."""

from collections.abc import Sequence

from proxy._pyupgrade import RequestHead as RequestHead
from proxy._pyupgrade import accept_token as accept_token
from proxy._pyupgrade import new_key as new_key

def parse_request(head: bytes) -> RequestHead | None: ...
def render_accept(key: str, subprotocol: str | None) -> bytes: ...
def render_request(
    host: str, target: str, key: str, subprotocols: Sequence[str], headers: Sequence[tuple[str, str]]
) -> bytes | None: ...
def parse_accept(data: bytes, key: str, offered: Sequence[str]) -> tuple[str | None, bytes] | None: ...

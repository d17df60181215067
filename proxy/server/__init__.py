"""The IO layer: the only package (with ``proxy.bench``) that touches asyncio, uvloop or sockets."""

from proxy import build as _build  # noqa: F401  (first: with FRAMEGATE_PURE=1 its finder loads our modules' source)

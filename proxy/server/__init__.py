"""The IO layer: the only package (with ``proxy.bench``) that touches asyncio, uvloop or sockets."""

"""framegate: a self-hosted WebSocket gateway modelled on AWS API Gateway WebSocket APIs."""

from proxy import build as _build  # noqa: F401  (first: with FRAMEGATE_PURE=1 its finder loads compiled modules' source)

__version__ = "0.1.0"

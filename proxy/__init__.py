"""framegate: a self-hosted WebSocket gateway modelled on AWS API Gateway WebSocket APIs."""

__version__ = "0.1.0"

"""Integration execution: one module per integration kind, values in and out.

Layer 3 (sans-IO cores) with IO edges: ``call`` (the ``IntegrationCall`` and
``IntegrationResult`` values), ``parameters`` (``requestParameters``),
``events`` (Lambda proxy events), ``http`` (HTTP, HTTP_PROXY), ``lambda_``
(AWS, AWS_PROXY through the Lambda Invoke API) and ``runner`` (the
process-wide ``IntegrationRunner`` the gateway calls). Importing this package
imports no IO: ``http``, ``lambda_`` and ``runner`` bring aiohttp when imported.
"""

from proxy.integrations.call import Failure, IntegrationCall, IntegrationResult

__all__ = ["Failure", "IntegrationCall", "IntegrationResult"]

"""Many processes and nodes acting as one gateway, on Redis (issue 19; design in docs/cluster.md).

Layer 4 (IO, beside ``proxy/server``): ``changes`` (control-plane change
notifications), ``membership`` (which nodes are alive), ``leases`` (global
throttling by token leases) and ``registry`` (which node holds a connection,
and routing ``@connections`` calls to it). The Redis store itself is
``proxy/store/redis.py``.
"""

"""``framegate bench``: the load generator (IO layer, like ``proxy.server``)."""

"""The process's open-file limit, and the connection cap it allows.

Layer 4. ``framegate serve`` raises the soft ``RLIMIT_NOFILE`` to the hard
limit at start (a default soft limit of 1024 would otherwise cap a gateway
built for tens of thousands of connections) and, unless ``--max-connections``
says otherwise, serves at most what the limit leaves after the reserves in
``proxy.limits``.
"""

from __future__ import annotations

import logging
import resource

from proxy.limits import ADMIN_FD_RESERVE, FD_RESERVE, FDS_PER_CONNECTION, MIN_CONNECTIONS

logger = logging.getLogger(__name__)


def raise_fd_limit() -> int:
    """Raise the soft open-file limit to the hard one (logged); the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == hard:
        # unlimited hard limits are refused by the kernel as a soft value: keep what we have
        logger.info("open-file limit: %d", soft)
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        logger.warning("open-file limit: %d (could not raise it to the hard limit %d: %s)", soft, hard, exc)
        return soft
    logger.info("open-file limit: raised from %d to the hard limit %d", soft, hard)
    return hard


def derived_max_connections(fd_limit: int) -> int:
    """The client connections ``fd_limit`` descriptors can serve, each with an upstream, after the reserves."""
    return max(MIN_CONNECTIONS, (fd_limit - FD_RESERVE - ADMIN_FD_RESERVE) // FDS_PER_CONNECTION)

"""Whether compiled code may be used: ``FRAMEGATE_PURE=1`` selects every pure-Python twin.

Layer 1. Read once at import time, because the choice precedes everything
else (a whole server or benchmark runs on the twins); this is the one
environment variable read outside ``proxy.cli``. ``proxy.codec`` and
``proxy.throttle`` pick their implementation with it.
"""

from __future__ import annotations

import os
from typing import Final

PURE: Final = os.environ.get("FRAMEGATE_PURE") == "1"

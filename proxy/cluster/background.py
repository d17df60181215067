"""``Background``: a long-running ``run()`` coroutine as one task between ``start`` and ``stop``.

Layer 4 (IO). The lease refills, the channel subscriptions and the registry's
heartbeat each run for the life of the process; ``stop`` cancels and awaits
the task, so nothing outlives its owner.
"""

from __future__ import annotations

import asyncio
import contextlib


class Background:
    """Runs ``self.run()`` as a task from ``start`` until ``stop``."""

    _task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        """Run in the background until ``stop``."""
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        """Cancel the task and wait for it to finish."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

"""The in-process suites again, on the compiled-as-they-are modules run from source (``FRAMEGATE_PURE=1``).

setup.py compiles ``proxy.build.COMPILED_SOURCES`` as they are; a machine
without a C compiler runs the same source interpreted. The subprocess suites
cover that through their ``python`` codec cases; the in-process ones import
the compiled modules into this interpreter, so they run once more here, in a
fresh one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.servers import ROOT

pytestmark = pytest.mark.integration

IN_PROCESS_SUITES = (
    "tests/test_handshake.py",
    "tests/test_session.py",
    "tests/test_throttle.py",
    "tests/server/test_observe_observer.py",
    "tests/server/test_observe_control.py",
    "tests/server/test_gateway_inprocess.py",
    "tests/server/test_upstream_open.py",
    "tests/server/test_deadlines.py",
)
CEILING_S = 600.0


def test_the_in_process_suites_pass_on_the_interpreted_connection_modules() -> None:
    env = {**os.environ, "FRAMEGATE_PURE": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *IN_PROCESS_SUITES]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=CEILING_S)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout

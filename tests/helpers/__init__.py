"""Test helpers: framegate subprocesses and independent ``websockets`` backends."""

"""Shared test helpers: starting framegate processes and independent peers."""

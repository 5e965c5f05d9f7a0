"""Sandesh local development stack: install, run, wait, stop (see docs/local-stack.md)."""

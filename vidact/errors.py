"""Errors shared across layers (a leaf module: no torch, no omegaconf).

``ConfigError`` lives here rather than in ``vidact.config`` so the data readers, which the
deploy side imports, can raise it without importing omegaconf; ``vidact.config`` re-exports it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem, phrased with the key's dotted path and where it came from; the CLI
    prints it as one line (``vidact <command>: error: ...``)."""

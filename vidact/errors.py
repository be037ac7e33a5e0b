"""Errors shared across layers, and how commands report them (a leaf module: no omegaconf, and
torch only when a command asks for threads).

``ConfigError`` lives here rather than in ``vidact.config`` so the data readers, which the
deploy side imports, can raise it without importing omegaconf; ``vidact.config`` re-exports it.
``run_command`` runs a command's body and turns its bad-input errors into one line.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A config problem, phrased with the key's dotted path and where it came from; the CLI
    prints it as one line (``vidact <command>: error: ...``)."""


def run_command(prog: str, body, args, errors: tuple[type[BaseException], ...]) -> int:
    """``body(args)`` for a command that reports bad input as one line: ``--threads`` applied first,
    an exception of ``errors`` printed as ``PROG: error: message`` (exit 2) instead of a traceback."""
    import sys

    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return body(args)
    except errors as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2

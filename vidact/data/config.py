"""Data configuration (plain dataclasses; ``vidact.config`` wraps them into the typed run config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class DataConfig:
    kind: str = "fake"  # "fake" (random batches of the model's shapes) | "sliding_square" (learnable toy task)
    num_workers: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("fake", "sliding_square"):
            raise ValueError(f"data.kind={self.kind!r} is not one of ['fake', 'sliding_square']")

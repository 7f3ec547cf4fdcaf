"""Helpers shared by the compression unit tests (a plain module: `conftest` is ambiguous to import)."""

from __future__ import annotations

import torch

NUM_ITEMS = 60


def batch(b: int = 4, length: int = 12, seed: int = 0, pad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded (inputs, targets) like the training loop's, rows of different lengths."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, NUM_ITEMS + 1, (b, length), generator=g)
    y = torch.randint(1, NUM_ITEMS + 1, (b, length), generator=g)
    if pad:
        for i in range(b):
            n = (i * 3) % (length - 2)
            x[i, :n] = 0
            y[i, :n] = 0
    return x, y

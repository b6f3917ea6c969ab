"""Figures of what an augmentation policy does: originals on top, random draws below."""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from lib.training.augment import Policy, apply, policy


def preview_grid(x: Tensor, pol: str | Policy, n: int = 8, rows: int = 3, seed: int = 0,
                 strength: float = 1.0) -> Tensor:
    """A uint8 (C, H, W) grid: the first n images in the top row, `rows` augmented draws below."""
    from torchvision.utils import make_grid

    x = x[:n]
    g = torch.Generator().manual_seed(seed)
    draws = [x] + [apply(pol, x, g, strength) for _ in range(rows)]
    return make_grid(torch.cat(draws).cpu(), nrow=len(x), padding=2, pad_value=255)


def first_per_class(ds) -> Tensor:
    """Index of the first image of every class present in `ds`."""
    return torch.tensor([int(i[0]) for i in (torch.nonzero(ds.labels == c).flatten()
                                             for c in range(len(ds.classes))) if len(i)])


def policy_figure(ds, policies: Mapping[str, str | Policy], rows: int = 3, ncols: int = 2):
    """One panel per named policy (a Policy, a name, or 'name@strength'): one training image
    per class, `rows` draws below."""
    from lib.reporting import plots

    x = ds.images[first_per_class(ds)]
    pols = [policy(p.split("@")[0], float(p.split("@")[1])) if isinstance(p, str) and "@" in p
            else p for p in policies.values()]
    grids = [preview_grid(x, p, n=len(x), rows=rows) for p in pols]
    return plots.image_grid(grids, titles=list(policies), ncols=ncols, size=5)

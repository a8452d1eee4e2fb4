"""The networks of the released weights, counted as the efficiency chapter counts the book's.

:func:`released_cost_table` builds each released variant of :func:`skdlib.models.build_model`
on PyTorch's ``meta`` device (shapes only) and counts its parameters and multiply-adds with
:func:`skdlib.models.complexity`, beside the numbers the paper reports where it reports them.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

__all__ = ["PAPER_COST", "RELEASED_NETWORKS", "released_cost_table"]

#: (label, build_model name, variant) of the networks whose weights were released.
RELEASED_NETWORKS: tuple[tuple[str, str, str], ...] = (
    ("authors' teacher PSPNet-ResNet101", "pspnet_resnet101", "authors"),
    ("authors' student PSPNet-ResNet18", "pspnet_resnet18", "authors"),
    ("CIRKD's PSPNet-ResNet101", "pspnet_resnet101", "cirkd"),
    ("CIRKD's teacher DeepLabV3-ResNet101", "deeplabv3_resnet101", "cirkd"),
)
#: (name, variant) -> the paper's (parameters in M, "GFLOPs" as printed: multiply-adds of one
#: 1024x2048 forward pass, the efficiency chapter's reading), where the paper gives them.
PAPER_COST: dict[tuple[str, str], tuple[float, float]] = {
    ("pspnet_resnet18", "authors"): (15.2, 477.6),
}


def released_cost_table(num_classes: int, size: tuple[int, int]) -> pd.DataFrame:
    """One row per released network: ``params (M)`` (what runs at inference), ``params incl.
    aux (M)``, ``GMACs @HxW`` at ``size``, and the paper's ``paper params (M)`` and
    ``paper GFLOPs`` (NaN where the paper reports none), indexed by the network's label."""
    from skdlib.models import build_model, complexity

    rows = []
    for label, name, variant in RELEASED_NETWORKS:
        with torch.device("meta"):  # shapes only: building and counting cost no memory
            model = build_model(name, num_classes, variant=variant)
        cost = complexity(model, size)
        paper_params, paper_gflops = PAPER_COST.get((name, variant), (math.nan, math.nan))
        rows.append(
            {
                "network": label,
                "build_model": f"{name}, variant={variant!r}",
                "params (M)": cost.params / 1e6,
                "params incl. aux (M)": cost.params_total / 1e6,
                f"GMACs @{size[0]}x{size[1]}": cost.macs / 1e9,
                "paper params (M)": paper_params,
                "paper GFLOPs": paper_gflops,
            }
        )
    return pd.DataFrame(rows).set_index("network")

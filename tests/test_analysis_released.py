"""The released networks' cost table of the efficiency chapter."""

from __future__ import annotations

import math

import torch

from skdlib.analysis.released import PAPER_COST, RELEASED_NETWORKS, released_cost_table
from skdlib.models import build_model, complexity


def test_released_cost_table_counts_each_variant_beside_the_paper():
    table = released_cost_table(19, (64, 128))
    assert list(table.index) == [label for label, _, _ in RELEASED_NETWORKS]
    for label, name, variant in RELEASED_NETWORKS:
        row = table.loc[label]
        assert row["params incl. aux (M)"] > row["params (M)"] > 0 and row["GMACs @64x128"] > 0
        paper = PAPER_COST.get((name, variant))
        if paper is None:
            assert math.isnan(row["paper params (M)"]) and math.isnan(row["paper GFLOPs"])
        else:
            assert (row["paper params (M)"], row["paper GFLOPs"]) == paper
    student = table.loc["authors' student PSPNet-ResNet18"]
    with torch.device("meta"):
        cost = complexity(build_model("pspnet_resnet18", 19, variant="authors"), (64, 128))
    assert (student["params (M)"], student["GMACs @64x128"]) == (cost.params / 1e6, cost.macs / 1e9)
    assert student["params incl. aux (M)"] * 1e6 == 13_068_262  # golden (19 classes)

"""Tests of the pair-wise variants: MIMIC, attention transfer, local pair-wise."""

from __future__ import annotations

import math

import pytest
import torch
from golden_values import check_golden

from skdlib.losses import (
    attention_transfer_loss,
    local_pairwise_loss,
    make_mimic_adapter,
    mimic_loss,
    pool_nodes,
)


def rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def naive_local(fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
    """Loop over every node and each of its in-map 8 neighbours (ordered pairs)."""
    n, _, h, w = fs.shape
    total, count = 0.0, 0
    for b in range(n):
        for y in range(h):
            for x in range(w):
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        yy, xx = y + dy, x + dx
                        if (dy, dx) == (0, 0) or not (0 <= yy < h and 0 <= xx < w):
                            continue
                        a_s = torch.cosine_similarity(
                            fs[b, :, y, x], fs[b, :, yy, xx], dim=0, eps=0
                        )
                        a_t = torch.cosine_similarity(
                            ft[b, :, y, x].detach(), ft[b, :, yy, xx].detach(), dim=0, eps=0
                        )
                        total = total + (a_s - a_t) ** 2
                        count += 1
    return total / count


def naive_attention(feat: torch.Tensor, p: float) -> torch.Tensor:
    n = feat.shape[0]
    v = (feat.abs() ** p).sum(1).reshape(n, -1)  # (N, C, H, W) -> (N, H*W)
    return v / v.norm(dim=1, keepdim=True)


# ---- MIMIC ----------------------------------------------------------------------------------


def test_mimic_identity_adapter_is_plain_mse() -> None:
    adapter = make_mimic_adapter(3, 3).double()
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(3, dtype=torch.float64).reshape(3, 3, 1, 1))
        adapter.bias.zero_()
    fs, ft = rand(2, 3, 4, 4, seed=0), rand(2, 3, 4, 4, seed=1)
    got = mimic_loss(fs, ft, adapter=adapter)
    assert got.item() == pytest.approx(((fs - ft) ** 2).mean().item(), rel=1e-6)


def test_mimic_hand_case_and_gradients() -> None:
    # adapter: 1 -> 2 channels, weights (2, -1), bias 0. Student value 1 -> (2, -1);
    # teacher (0, 0) -> squared errors (4, 1), mean over 2 elements = 2.5.
    adapter = make_mimic_adapter(1, 2)
    with torch.no_grad():
        adapter.weight.copy_(torch.tensor([2.0, -1.0]).reshape(2, 1, 1, 1))
        adapter.bias.zero_()
    fs = torch.ones(1, 1, 1, 1, requires_grad=True)
    ft = torch.zeros(1, 2, 1, 1, requires_grad=True)
    loss = mimic_loss(fs, ft, adapter=adapter)
    assert loss.item() == pytest.approx(2.5)
    loss.backward()
    assert ft.grad is None and fs.grad is not None and adapter.weight.grad is not None


def test_mimic_zero_features_finite() -> None:
    fs = torch.zeros(1, 3, 2, 2, requires_grad=True)
    loss = mimic_loss(fs, torch.zeros(1, 2, 2, 2), adapter=make_mimic_adapter(3, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(fs.grad).all()


def test_mimic_errors() -> None:
    with pytest.raises(ValueError, match=r"adapter output \(1, 2, 4, 4\).*\(1, 5, 4, 4\)"):
        mimic_loss(
            torch.zeros(1, 3, 4, 4), torch.zeros(1, 5, 4, 4), adapter=make_mimic_adapter(3, 2)
        )
    with pytest.raises(ValueError, match="spatial"):
        mimic_loss(
            torch.zeros(1, 3, 4, 4), torch.zeros(1, 2, 4, 5), adapter=make_mimic_adapter(3, 2)
        )
    with pytest.raises(ValueError, match="channel"):
        make_mimic_adapter(0, 2)


# ---- attention transfer ---------------------------------------------------------------------


def test_attention_transfer_hand_case() -> None:
    # One channel, two positions. Student (1, 0): attention (1, 0). Teacher (1, 1): (1, 1)/sqrt 2.
    # Squared differences (1 - 1/sqrt 2)^2 + (1/sqrt 2)^2 = 2 - sqrt 2; mean over 2 -> 1 - 1/sqrt 2.
    fs = torch.tensor([[[[1.0, 0.0]]]])
    ft = torch.tensor([[[[1.0, 1.0]]]])
    got = attention_transfer_loss(fs, ft)
    assert got.item() == pytest.approx(1.0 - 1.0 / math.sqrt(2.0), rel=1e-6)


@pytest.mark.parametrize("p", [1.0, 2.0, 3.0])
def test_attention_transfer_matches_naive(p: float) -> None:
    fs, ft = rand(2, 4, 5, 6, seed=2), rand(2, 7, 5, 6, seed=3)
    want = ((naive_attention(fs, p) - naive_attention(ft, p)) ** 2).mean()
    assert attention_transfer_loss(fs, ft, p=p).item() == pytest.approx(want.item(), rel=1e-5)


def test_attention_transfer_invariances_and_gradients() -> None:
    fs = rand(2, 4, 5, 6, seed=4, dtype=torch.float32).requires_grad_(True)
    ft = rand(2, 3, 5, 6, seed=5, dtype=torch.float32).requires_grad_(True)
    base = attention_transfer_loss(fs, ft)
    assert attention_transfer_loss(fs * 4.0, ft * 0.1).item() == pytest.approx(
        base.item(), rel=1e-5
    )
    dup = attention_transfer_loss(torch.cat([fs, fs]), torch.cat([ft, ft]))
    assert dup.item() == pytest.approx(base.item(), rel=1e-6)
    base.backward()
    assert ft.grad is None and fs.grad is not None


def test_attention_transfer_zero_maps_finite() -> None:
    fs = torch.zeros(1, 2, 3, 3, requires_grad=True)
    loss = attention_transfer_loss(fs, torch.zeros(1, 2, 3, 3))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0 and torch.isfinite(fs.grad).all()
    with pytest.raises(ValueError, match="p must be"):
        attention_transfer_loss(fs, fs, p=0)


# ---- local pair-wise ------------------------------------------------------------------------


def test_local_hand_case_two_nodes() -> None:
    # Nodes (1, 0) and (0, 1) for the student (a = 0), (1, 0) twice for the teacher (a = 1):
    # the one neighbour pair (both orders) has squared difference 1 -> loss 1.
    fs = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])
    ft = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])
    assert local_pairwise_loss(fs, ft).item() == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("shape", [(4, 5), (1, 6), (5, 1), (2, 2)])
def test_local_matches_naive_loops(shape: tuple[int, int]) -> None:
    fs, ft = rand(2, 3, *shape, seed=6), rand(2, 5, *shape, seed=7)
    got = local_pairwise_loss(fs, ft)
    assert got.item() == pytest.approx(naive_local(fs, ft).item(), rel=1e-9)


def test_local_with_pooling_and_gradient() -> None:
    fs = rand(1, 3, 7, 6, seed=8).requires_grad_(True)
    ft = rand(1, 4, 7, 6, seed=9).requires_grad_(True)
    local_pairwise_loss(fs, ft, node_size=2, pool="max").backward()
    assert ft.grad is None
    ref = fs.detach().clone().requires_grad_(True)
    naive_local(
        pool_nodes(ref, node_size=2, pool="max"), pool_nodes(ft.detach(), node_size=2, pool="max")
    ).backward()
    torch.testing.assert_close(fs.grad, ref.grad, rtol=1e-8, atol=1e-12)


def test_local_invariances() -> None:
    fs, ft = rand(2, 3, 4, 4, seed=10), rand(2, 2, 4, 4, seed=11)
    base = local_pairwise_loss(fs, ft)
    assert local_pairwise_loss(fs * 5.0, ft * 0.3).item() == pytest.approx(base.item(), rel=1e-9)
    dup = local_pairwise_loss(torch.cat([fs, fs]), torch.cat([ft, ft]))
    assert dup.item() == pytest.approx(base.item(), rel=1e-9)
    assert local_pairwise_loss(fs, fs * 2).item() == pytest.approx(0.0, abs=1e-12)


def test_local_zero_features_and_errors() -> None:
    fs = torch.zeros(1, 2, 3, 3, requires_grad=True)
    loss = local_pairwise_loss(fs, torch.zeros(1, 2, 3, 3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(fs.grad).all()
    with pytest.raises(ValueError, match="at least 2 nodes"):
        local_pairwise_loss(torch.zeros(1, 2, 1, 1), torch.zeros(1, 2, 1, 1))
    with pytest.raises(ValueError, match="pool"):
        local_pairwise_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), pool="median")
    with pytest.raises(ValueError, match="node_size"):
        local_pairwise_loss(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 3), node_size=0)
    with pytest.raises(ValueError, match=r"\(1, 2, 3, 3\).*\(2, 2, 3, 3\)"):
        local_pairwise_loss(torch.zeros(1, 2, 3, 3), torch.zeros(2, 2, 3, 3))


def test_golden_values() -> None:
    fs, ft = rand(2, 6, 7, 8, seed=1234), rand(2, 4, 7, 8, seed=4321)
    adapter = make_mimic_adapter(6, 4).double()
    g = torch.Generator().manual_seed(99)
    with torch.no_grad():
        adapter.weight.copy_(torch.randn(4, 6, 1, 1, generator=g, dtype=torch.float64))
        adapter.bias.copy_(torch.randn(4, generator=g, dtype=torch.float64))
    check_golden(
        {
            "mimic": mimic_loss(fs, ft, adapter=adapter).item(),
            "attention_transfer_p2": attention_transfer_loss(fs, ft).item(),
            "local_pairwise_beta1": local_pairwise_loss(fs, ft).item(),
            "local_pairwise_beta2": local_pairwise_loss(fs, ft, node_size=2).item(),
        }
    )

"""Tests of the embedding network (the holistic term's critic)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from skdlib.losses import gradient_penalty, holistic_critic_loss
from skdlib.models.discriminator import MIN_SIZE, Discriminator, SelfAttention, min_map_size

SMALL = (8, 8, 16, 16)


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_output_shape_finite_and_backward() -> None:
    torch.manual_seed(0)
    d = Discriminator(5, widths=SMALL)
    maps = d.prepare_input(rand(3, 5, 20, 24, seed=1).requires_grad_(True))
    score = d(maps, rand(3, 3, 80, 96, seed=2))
    assert score.shape == (3,)
    assert torch.isfinite(score).all()
    score.sum().backward()
    for name, p in d.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_spectral_norm_on_all_five_convs_and_two_attention_blocks() -> None:
    d = Discriminator(4, widths=SMALL)
    convs = [d.conv1, d.conv2, d.conv3, d.conv4, d.conv5]
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    normed = [m for m in d.modules() if isinstance(m, nn.Conv2d) and parametrize.is_parametrized(m)]
    assert len(normed) == 5
    assert d.conv5.out_channels == 1
    assert [c.stride for c in convs[:4]] == [(2, 2)] * 4
    assert [c.kernel_size for c in convs[:4]] == [(4, 4)] * 4
    attn = [m for m in d.modules() if isinstance(m, SelfAttention)]
    assert attn == [d.attn1, d.attn2]
    assert d.attn1.value.in_channels == SMALL[2] and d.attn2.value.in_channels == SMALL[3]
    assert all(a.gamma.item() == 0.0 for a in attn)
    assert d.conv1.in_channels == 4 + 3


def test_self_attention_matches_rederivation() -> None:
    torch.manual_seed(3)
    block = SelfAttention(8)
    with torch.no_grad():
        block.gamma.fill_(0.7)
    x = rand(2, 8, 3, 4, seed=4)
    got = block(x)
    q = (
        torch.einsum("oc,bchw->bohw", block.query.weight[:, :, 0, 0], x)
        + block.query.bias[:, None, None]
    )
    k = (
        torch.einsum("oc,bchw->bohw", block.key.weight[:, :, 0, 0], x)
        + block.key.bias[:, None, None]
    )
    v = (
        torch.einsum("oc,bchw->bohw", block.value.weight[:, :, 0, 0], x)
        + block.value.bias[:, None, None]
    )
    want = torch.empty_like(x)
    for b in range(2):
        qs, ks, vs = (
            q[b].reshape(1, 12),
            k[b].reshape(1, 12),
            v[b].reshape(8, 12),
        )  # (C', n), (C, n)
        for i in range(12):
            weights = torch.softmax(qs[:, i] @ ks, dim=0)  # (n,)
            want[b].reshape(8, 12)[:, i] = x[b].reshape(8, 12)[:, i] + 0.7 * (vs @ weights)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_authors_code_variant_builds_and_runs() -> None:
    torch.manual_seed(5)
    d = Discriminator(19, use_image=False, input="logits", input_batchnorm=True)
    assert isinstance(d.input_bn, nn.BatchNorm2d)
    assert d.conv1.in_channels == 19 and d.conv4.out_channels == 512
    logits = rand(2, 19, 33, 33, seed=6)
    assert torch.equal(d.prepare_input(logits), logits)
    score = d(logits, rand(2, 3, 64, 64, seed=7))  # an image is accepted and ignored
    assert score.shape == (2,) and torch.isfinite(score).all()
    score.sum().backward()
    assert d.input_bn.weight.grad is not None
    d.eval()  # no power iteration, running BN statistics: the forward is a fixed function
    with torch.no_grad():
        assert torch.equal(d(logits, rand(2, 3, 64, 64, seed=7)), d(logits))


def test_prepare_input_softmax() -> None:
    d = Discriminator(3, widths=SMALL)
    probs = d.prepare_input(rand(2, 3, 16, 16, seed=8))
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 16, 16))


def test_image_condition_changes_the_score() -> None:
    torch.manual_seed(9)
    d = Discriminator(3, widths=SMALL)
    with torch.no_grad():
        d.attn1.gamma.fill_(0.5)
    maps = d.prepare_input(rand(2, 3, 16, 16, seed=10))
    a = d(maps, rand(2, 3, 64, 64, seed=11))
    b = d(maps, rand(2, 3, 64, 64, seed=12))
    assert not torch.allclose(a, b)


def test_with_gradient_penalty_and_critic_loss() -> None:
    torch.manual_seed(13)
    d = Discriminator(4, widths=SMALL)
    image = rand(2, 3, 32, 32, seed=14)
    q_t = d.prepare_input(rand(2, 4, 16, 16, seed=15))
    q_s = d.prepare_input(rand(2, 4, 16, 16, seed=16).requires_grad_(True))
    loss = holistic_critic_loss(d(q_t, image), d(q_s.detach(), image))
    gp = gradient_penalty(d, q_t, q_s, image, generator=torch.Generator().manual_seed(0))
    (loss + 10.0 * gp).backward()
    assert torch.isfinite(gp)
    assert d.conv1.parametrizations.weight.original.grad is not None


def test_bad_inputs() -> None:
    d = Discriminator(4, widths=SMALL)
    image = torch.zeros(2, 3, 32, 32)
    with pytest.raises(ValueError, match="at least 16 x 16"):
        d(torch.zeros(2, 4, 15, 32), image)
    with pytest.raises(ValueError, match=r"\(N, 4, H, W\).*\(2, 5, 16, 16\)"):
        d(torch.zeros(2, 5, 16, 16), image)
    with pytest.raises(ValueError, match="image is required"):
        d(torch.zeros(2, 4, 16, 16))
    with pytest.raises(ValueError, match=r"image must be.*\(1, 3, 32, 32\)"):
        d(torch.zeros(2, 4, 16, 16), torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="input"):
        Discriminator(4, input="probabilities")
    with pytest.raises(ValueError, match="widths"):
        Discriminator(4, widths=(8, 8, 8))


@pytest.mark.parametrize("downsample", [1, 2, 3, 4])
def test_fewer_stride2_convolutions_accept_smaller_maps(downsample: int) -> None:
    # downsample=n: the first n of the four convolutions halve the size, the rest are 3x3 stride 1.
    torch.manual_seed(17)
    d = Discriminator(4, widths=SMALL, downsample=downsample)
    side = min_map_size(downsample)
    assert d.min_size == side == 2**downsample
    convs = [d.conv1, d.conv2, d.conv3, d.conv4]
    assert [c.stride for c in convs] == [(2, 2)] * downsample + [(1, 1)] * (4 - downsample)
    assert [c.kernel_size for c in convs] == [(4, 4)] * downsample + [(3, 3)] * (4 - downsample)
    image = rand(2, 3, 8 * side, 8 * side, seed=18)
    q_t = d.prepare_input(rand(2, 4, side, side, seed=19))
    q_s = d.prepare_input(rand(2, 4, side, side, seed=20))
    score = d(q_s, image)
    assert score.shape == (2,) and torch.isfinite(score).all()
    gp = gradient_penalty(d, q_t, q_s, image, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(gp)
    with pytest.raises(
        ValueError, match=f"{downsample} stride-2 convolutions need at least {side} x {side}"
    ):
        d(torch.zeros(2, 4, side - 1, side), image)


def test_default_downsample_is_the_authors_four() -> None:
    torch.manual_seed(21)
    default = Discriminator(4, widths=SMALL)
    torch.manual_seed(21)
    explicit = Discriminator(4, widths=SMALL, downsample=4)
    assert default.min_size == MIN_SIZE == 16
    for (name, a), (_, b) in zip(
        default.state_dict().items(), explicit.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("bad", [0, 5, 2.0, True])
def test_bad_downsample(bad: object) -> None:
    with pytest.raises(ValueError, match="downsample must be an int in"):
        Discriminator(4, widths=SMALL, downsample=bad)  # type: ignore[arg-type]

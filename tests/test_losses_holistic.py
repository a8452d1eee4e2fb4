"""Tests of the holistic (adversarial) losses and the gradient penalty."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from golden_values import check_golden

from skdlib.losses import gradient_penalty, holistic_critic_loss, holistic_generator_loss


class LinearCritic(nn.Module):
    """D(x | I) = <w, x> + <v, I>: its gradient w.r.t. x is w everywhere."""

    def __init__(self, w: torch.Tensor, v: torch.Tensor | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone())
        self.v = None if v is None else nn.Parameter(v.clone())

    def forward(self, x: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        score = (x * self.w).flatten(1).sum(1)  # (N, K, H, W) -> (N, K*H*W) -> (N,)
        if self.v is not None and image is not None:
            score = score + (image * self.v).flatten(1).sum(1)  # (N, 3, H, W) -> (N,)
        return score.unsqueeze(1)  # (N,) -> (N, 1): the loss accepts both


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_critic_loss_hand_values() -> None:
    st = torch.tensor([1.0, 3.0])  # mean 2
    ss = torch.tensor([[-1.0], [0.5]])  # (N, 1), mean -0.25
    assert holistic_critic_loss(st, ss).item() == pytest.approx(-2.25)
    # hinge: relu(1 - 1) + relu(1 - 3) -> mean 0; relu(1 - 1) + relu(1 + 0.5) -> mean 0.75
    assert holistic_critic_loss(st, ss, kind="hinge").item() == pytest.approx(0.75)


def test_generator_loss_hand_values() -> None:
    ss = torch.tensor([-1.0, 0.5, 2.0])
    assert holistic_generator_loss(ss).item() == pytest.approx(-0.5)
    assert holistic_generator_loss(ss.unsqueeze(1), kind="hinge").item() == pytest.approx(-0.5)


def test_generator_and_critic_wgan_gradients_are_opposite_for_the_student() -> None:
    ss = torch.tensor([0.3, -0.2], requires_grad=True)
    holistic_generator_loss(ss).backward()
    g_gen = ss.grad.clone()
    ss.grad = None
    holistic_critic_loss(torch.tensor([1.0, 2.0]), ss).backward()
    torch.testing.assert_close(g_gen, -ss.grad)


def test_loss_errors() -> None:
    with pytest.raises(ValueError, match="kind"):
        holistic_critic_loss(torch.zeros(2), torch.zeros(2), kind="lsgan")
    with pytest.raises(ValueError, match="kind"):
        holistic_generator_loss(torch.zeros(2), kind="lsgan")
    with pytest.raises(ValueError, match=r"score_student.*\(2, 3\)"):
        holistic_critic_loss(torch.zeros(2), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="score_teacher"):
        holistic_critic_loss(torch.zeros(2, 1, 1), torch.zeros(2))


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.5])
def test_penalty_exact_on_linear_critic(scale: float) -> None:
    w = rand(1, 3, 4, 5, seed=0)
    w = w / w.norm() * scale  # ||w|| = scale -> penalty (scale - 1)^2 for every interpolation
    critic = LinearCritic(w, v=rand(1, 3, 8, 10, seed=1))
    t, s, img = rand(4, 3, 4, 5, seed=2), rand(4, 3, 4, 5, seed=3), rand(4, 3, 8, 10, seed=4)
    gp = gradient_penalty(critic, t, s, img, generator=torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx((scale - 1.0) ** 2, abs=1e-6)
    # create_graph: the penalty trains the critic; d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
    gp.backward()
    torch.testing.assert_close(critic.w.grad, 2 * (scale - 1.0) * w / scale, rtol=1e-4, atol=1e-6)
    assert critic.v.grad is None or critic.v.grad.abs().max() == 0  # the image is a fixed condition


def test_penalty_matches_rederivation_on_nonlinear_critic() -> None:
    conv = nn.Conv2d(3, 1, 3, padding=1)
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(5))

    def critic(x: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(conv(x)).mean(dim=(1, 2, 3))  # (N, 1, H, W) -> (N,)

    t, s = rand(3, 3, 6, 6, seed=6), rand(3, 3, 6, 6, seed=7)
    eps = torch.tensor([0.1, 0.5, 0.9])
    got = gradient_penalty(critic, t, s, None, eps=eps)
    want = 0.0
    for i in range(3):
        x = (eps[i] * t[i : i + 1] + (1 - eps[i]) * s[i : i + 1]).requires_grad_(True)
        (g,) = torch.autograd.grad(critic(x, None).sum(), x)
        want += (g.norm() - 1.0) ** 2 / 3
    assert got.item() == pytest.approx(float(want), rel=1e-5)


def test_no_gradient_reaches_the_student_or_teacher() -> None:
    critic = LinearCritic(rand(1, 2, 3, 3, seed=8))
    t = rand(2, 2, 3, 3, seed=9).requires_grad_(True)
    s = rand(2, 2, 3, 3, seed=10).requires_grad_(True)
    gradient_penalty(critic, t, s, None).backward()
    assert s.grad is None and t.grad is None
    assert critic.w.grad is not None


def test_zero_maps_and_constant_critics_are_finite() -> None:
    zeros = torch.zeros(2, 2, 3, 3)
    critic = LinearCritic(torch.zeros(1, 2, 3, 3))  # gradient exactly 0
    gp = gradient_penalty(critic, zeros, zeros, None)
    gp.backward()
    assert gp.item() == pytest.approx(1.0, abs=1e-5)
    assert torch.isfinite(critic.w.grad).all()

    bias = nn.Parameter(torch.tensor(0.7))
    gp = gradient_penalty(lambda x, i: bias.expand(x.shape[0]), zeros, zeros, None)
    assert torch.isfinite(gp) and gp.item() == pytest.approx(1.0, abs=1e-5)
    gp = gradient_penalty(lambda x, i: torch.ones(x.shape[0]), zeros, zeros, None)
    assert torch.isfinite(gp) and gp.item() == pytest.approx(1.0, abs=1e-5)


def test_generator_makes_penalty_deterministic_and_works_under_no_grad() -> None:
    conv = nn.Conv2d(2, 1, 1)

    def critic(x: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(conv(x)).mean(dim=(1, 2, 3))  # (N, 1, H, W) -> (N,)

    t, s = rand(4, 2, 3, 3, seed=11), rand(4, 2, 3, 3, seed=12)
    a = gradient_penalty(critic, t, s, None, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        b = gradient_penalty(critic, t, s, None, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item()
    eps = torch.rand(4, generator=torch.Generator().manual_seed(3))
    assert gradient_penalty(critic, t, s, None, eps=eps).item() == a.item()


def test_penalty_errors() -> None:
    critic = LinearCritic(torch.ones(1, 2, 3, 3))
    with pytest.raises(ValueError, match=r"\(2, 2, 3, 3\).*\(2, 2, 3, 4\)"):
        gradient_penalty(critic, torch.zeros(2, 2, 3, 3), torch.zeros(2, 2, 3, 4), None)
    with pytest.raises(ValueError, match="teacher_map and student_map"):
        gradient_penalty(critic, torch.zeros(2, 3, 3), torch.zeros(2, 3, 3), None)
    with pytest.raises(ValueError, match="eps"):
        gradient_penalty(
            critic, torch.zeros(2, 2, 3, 3), torch.zeros(2, 2, 3, 3), None, eps=torch.zeros(3)
        )
    with pytest.raises(ValueError, match="critic output"):
        gradient_penalty(lambda x, i: x, torch.zeros(2, 2, 3, 3), torch.zeros(2, 2, 3, 3), None)


def test_golden_values() -> None:
    g = torch.Generator().manual_seed(1234)
    st = torch.randn(5, generator=g, dtype=torch.float64)
    ss = torch.randn(5, generator=g, dtype=torch.float64)
    conv = nn.Conv2d(3, 1, 3, padding=1).double()
    torch.nn.init.normal_(conv.weight, generator=g)
    torch.nn.init.normal_(conv.bias, generator=g)

    def critic(x: torch.Tensor, image: torch.Tensor | None) -> torch.Tensor:
        return torch.tanh(conv(x)).mean(dim=(1, 2, 3))  # (N, 1, H, W) -> (N,)

    t = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    s = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    check_golden(
        {
            "holistic_critic_wgan": holistic_critic_loss(st, ss).item(),
            "holistic_critic_hinge": holistic_critic_loss(st, ss, kind="hinge").item(),
            "holistic_generator": holistic_generator_loss(ss).item(),
            "gradient_penalty": gradient_penalty(
                critic, t, s, None, eps=torch.tensor([0.25, 0.75])
            ).item(),
        }
    )

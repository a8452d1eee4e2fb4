"""Tests of the pair-wise similarity loss (Eq. 2-3) and node pooling."""

from __future__ import annotations

import math

import pytest
import torch
from golden_values import check_golden
from torch.utils._python_dispatch import TorchDispatchMode

import skdlib.losses.pairwise as pairwise_module
from skdlib.losses import node_grid, pairwise_similarity_loss, pairwise_similarity_map, pool_nodes


def naive_pairwise(
    fs: torch.Tensor, ft: torch.Tensor, *, detach_norm: bool = False
) -> torch.Tensor:
    """Eq. 2-3 as written: build both n x n cosine matrices per image, mean squared difference."""
    losses = []
    for b in range(fs.shape[0]):
        per = []
        for f, detach in ((fs[b], detach_norm), (ft[b].detach(), True)):
            flat = f.reshape(f.shape[0], -1)  # (C, H, W) -> (C, n)
            norm = flat.norm(dim=0, keepdim=True)  # (1, n)
            per.append(flat / (norm.detach() if detach else norm))
        a_s = torch.einsum("ci,cj->ij", per[0], per[0])  # (n, n)
        a_t = torch.einsum("ci,cj->ij", per[1], per[1])  # (n, n)
        losses.append(((a_s - a_t) ** 2).sum() / a_s.shape[0] ** 2)
    return torch.stack(losses).mean()


def naive_pool(f: torch.Tensor, kh: int, kw: int, mode: str) -> torch.Tensor:
    """Explicit loops: stride = kernel, windows clipped at the border (ceil mode)."""
    n, c, h, w = f.shape
    oh, ow = math.ceil(h / kh), math.ceil(w / kw)
    out = torch.empty(n, c, oh, ow, dtype=f.dtype)
    for y in range(oh):
        for x in range(ow):
            patch = f[:, :, y * kh : (y + 1) * kh, x * kw : (x + 1) * kw]
            flat = patch.reshape(n, c, -1)  # (N, C, kh', kw') -> (N, C, kh' * kw')
            out[:, :, y, x] = flat.mean(-1) if mode == "avg" else flat.amax(-1)
    return out


def rand(*shape: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_hand_computed_two_nodes() -> None:
    # Student nodes (1, 0), (0, 1): A_s = [[1, 0], [0, 1]]. Teacher nodes (1, 0), (1, 0):
    # A_t = [[1, 1], [1, 1]]. Squared differences sum to 2 over n^2 = 4 pairs -> 0.5.
    fs = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    ft = torch.tensor([[[[1.0, 1.0]], [[0.0, 0.0]]]])
    assert pairwise_similarity_loss(fs, ft).item() == pytest.approx(0.5, rel=1e-6)


@pytest.mark.parametrize("node_size", [1, 2, (2, 3)])
@pytest.mark.parametrize("pool", ["avg", "max"])
def test_matches_naive_with_pooling(node_size: int | tuple[int, int], pool: str) -> None:
    fs, ft = rand(2, 6, 7, 9, seed=0), rand(2, 10, 7, 9, seed=1)  # channels differ
    kh, kw = (node_size, node_size) if isinstance(node_size, int) else node_size
    want = naive_pairwise(naive_pool(fs, kh, kw, pool), naive_pool(ft, kh, kw, pool))
    got = pairwise_similarity_loss(fs, ft, node_size=node_size, pool=pool)
    assert got.item() == pytest.approx(want.item(), rel=1e-9)


def test_node_fraction_authors_rule_gives_3x3_on_65x65() -> None:
    f = rand(1, 3, 65, 65, seed=2)
    nodes = pool_nodes(f, pool="max", node_fraction=0.5)
    assert nodes.shape == (1, 3, 3, 3)
    torch.testing.assert_close(nodes, naive_pool(f, 32, 32, "max"))
    fs, ft = rand(2, 4, 65, 65, seed=3), rand(2, 5, 65, 65, seed=4)
    got = pairwise_similarity_loss(fs, ft, pool="max", node_fraction=0.5)
    want = naive_pairwise(naive_pool(fs, 32, 32, "max"), naive_pool(ft, 32, 32, "max"))
    assert got.item() == pytest.approx(want.item(), rel=1e-9)


def test_maps_of_two_sizes_need_only_equal_node_grids() -> None:
    # A student map at 1/4 and a teacher map at 1/8 of the same image: half the fraction's
    # kernel on each map gives both 2 x 3 nodes, each pooled with its own kernel.
    fs, ft = rand(2, 4, 16, 24, seed=5), rand(2, 7, 8, 12, seed=6)
    assert node_grid(16, 24, node_fraction=0.5) == node_grid(8, 12, node_fraction=0.5) == (2, 2)
    got = pairwise_similarity_loss(fs, ft, pool="avg", node_fraction=0.5)
    want = naive_pairwise(naive_pool(fs, 8, 12, "avg"), naive_pool(ft, 4, 6, "avg"))
    assert got.item() == pytest.approx(want.item(), rel=1e-9)
    assert node_grid(7, 9, node_size=2) == (4, 5)  # ceil: the border nodes are partial
    with pytest.raises(ValueError, match=r"node grid .*\(2, 4, 16, 24\) \(\(8, 12\) nodes\)"):
        pairwise_similarity_loss(fs, ft, node_size=2)


def test_float32_accuracy_against_float64_naive() -> None:
    fs, ft = rand(2, 32, 24, 24, seed=5), rand(2, 48, 24, 24, seed=6)
    got = pairwise_similarity_loss(fs.float(), ft.float())
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(naive_pairwise(fs, ft).item(), rel=1e-5)


def test_scale_invariance() -> None:
    fs, ft = rand(2, 5, 6, 6, seed=7), rand(2, 3, 6, 6, seed=8)
    base = pairwise_similarity_loss(fs, ft)
    scaled = pairwise_similarity_loss(fs * 3.7, ft * 0.25)
    assert scaled.item() == pytest.approx(base.item(), rel=1e-9)


def test_zero_when_student_equals_teacher_up_to_scale() -> None:
    f = rand(2, 5, 6, 6, seed=9)
    assert pairwise_similarity_loss(f, 2.0 * f).item() == pytest.approx(0.0, abs=1e-12)


def test_independent_of_batch_size() -> None:
    fs, ft = rand(2, 5, 4, 6, seed=10), rand(2, 7, 4, 6, seed=11)
    one = pairwise_similarity_loss(fs, ft)
    two = pairwise_similarity_loss(torch.cat([fs, fs]), torch.cat([ft, ft]))
    assert two.item() == pytest.approx(one.item(), rel=1e-9)


@pytest.mark.parametrize("detach_norm", [False, True])
def test_gradient_equals_naive_and_teacher_gets_none(detach_norm: bool) -> None:
    fs = rand(2, 5, 4, 5, seed=12).requires_grad_(True)
    ft = rand(2, 6, 4, 5, seed=13).requires_grad_(True)
    pairwise_similarity_loss(fs, ft, node_size=2, detach_norm=detach_norm).backward()
    got = fs.grad.clone()
    assert ft.grad is None
    fs_ref = fs.detach().clone().requires_grad_(True)
    naive_pairwise(
        naive_pool(fs_ref, 2, 2, "avg"),
        naive_pool(ft.detach(), 2, 2, "avg"),
        detach_norm=detach_norm,
    ).backward()
    torch.testing.assert_close(got, fs_ref.grad, rtol=1e-8, atol=1e-12)


def test_detached_norm_gradient_differs_from_true_gradient() -> None:
    grads = []
    for detach_norm in (False, True):
        fs = rand(1, 4, 3, 3, seed=14).requires_grad_(True)
        pairwise_similarity_loss(fs, rand(1, 4, 3, 3, seed=15), detach_norm=detach_norm).backward()
        grads.append(fs.grad)
    assert not torch.allclose(grads[0], grads[1])


def test_zero_features_finite() -> None:
    fs = torch.zeros(2, 4, 3, 3, requires_grad=True)
    ft = torch.zeros(2, 4, 3, 3)
    loss = pairwise_similarity_loss(fs, ft)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == 0.0
    assert torch.isfinite(fs.grad).all()
    # One zero node among non-zero ones: its similarity is 0, nothing is NaN.
    fs2 = rand(1, 4, 3, 3, seed=16)
    fs2[:, :, 1, 1] = 0
    fs2.requires_grad_(True)
    loss2 = pairwise_similarity_loss(fs2, rand(1, 4, 3, 3, seed=17))
    loss2.backward()
    assert torch.isfinite(loss2) and torch.isfinite(fs2.grad).all()


class _LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an op returns."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_never_builds_node_by_node_matrices(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the loss must not call pairwise_similarity_map")

    monkeypatch.setattr(pairwise_module, "pairwise_similarity_map", forbidden)
    n_img, c, h, w = 2, 8, 24, 24  # n = 576 nodes, n^2 = 331776 >> N * C * n = 9216
    fs = rand(n_img, c, h, w, seed=18, dtype=torch.float32).requires_grad_(True)
    ft = rand(n_img, c, h, w, seed=19, dtype=torch.float32)
    with _LargestTensor() as mode:
        pairwise_similarity_loss(fs, ft).backward()
    assert mode.largest <= n_img * c * h * w
    # The naive map, by contrast, is n x n per image.
    assert pairwise_similarity_map(fs).shape == (n_img, h * w, h * w)


def test_similarity_map() -> None:
    f = rand(2, 3, 4, 4, seed=20)
    a = pairwise_similarity_map(f, node_size=2)
    assert a.shape == (2, 4, 4)
    nodes = naive_pool(f, 2, 2, "avg").reshape(2, 3, 4)  # (N, C, 2, 2) -> (N, C, 4)
    nodes = nodes / nodes.norm(dim=1, keepdim=True)
    torch.testing.assert_close(a, torch.einsum("bci,bcj->bij", nodes, nodes))
    torch.testing.assert_close(torch.diagonal(a, dim1=1, dim2=2), torch.ones(2, 4, dtype=a.dtype))


def test_bad_inputs() -> None:
    f = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"student_feat.*\(2, 3, 4, 4\).*\(2, 3, 4, 5\)"):
        pairwise_similarity_loss(f, torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 4\).*\(1, 3, 4, 4\)"):
        pairwise_similarity_loss(f, torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match="student_feat must be"):
        pairwise_similarity_loss(torch.zeros(3, 4, 4), f)
    with pytest.raises(ValueError, match="teacher_feat must be"):
        pairwise_similarity_loss(f, torch.zeros(3, 4, 4))
    with pytest.raises(ValueError, match="node_size"):
        pairwise_similarity_loss(f, f, node_size=0)
    with pytest.raises(ValueError, match="node_size"):
        pairwise_similarity_loss(f, f, node_size=(2, 0))
    with pytest.raises(ValueError, match="larger than the feature map"):
        pairwise_similarity_loss(f, f, node_size=5)
    with pytest.raises(ValueError, match="pool"):
        pairwise_similarity_loss(f, f, pool="min")
    with pytest.raises(ValueError, match="not both"):
        pairwise_similarity_loss(f, f, node_size=2, node_fraction=0.5)
    with pytest.raises(ValueError, match="node_fraction"):
        pairwise_similarity_loss(f, f, node_fraction=1.5)
    with pytest.raises(ValueError, match="dtype"):
        pairwise_similarity_loss(f, f, dtype=torch.float16)


def test_golden_values() -> None:
    fs, ft = rand(2, 6, 9, 11, seed=1234), rand(2, 4, 9, 11, seed=4321)
    check_golden(
        {
            "pairwise_beta1": pairwise_similarity_loss(fs, ft).item(),
            "pairwise_beta2_avg": pairwise_similarity_loss(fs, ft, node_size=2).item(),
            "pairwise_fraction_max": pairwise_similarity_loss(
                fs, ft, pool="max", node_fraction=0.5
            ).item(),
        }
    )


def test_autocast_region_does_not_lower_precision() -> None:
    fs = rand(2, 64, 16, 16, seed=21, dtype=torch.float32).requires_grad_(True)
    ft = rand(2, 64, 16, 16, seed=22, dtype=torch.float32)
    want = naive_pairwise(fs.double(), ft.double())
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        got = pairwise_similarity_loss(fs, ft)
        amap = pairwise_similarity_map(fs)
    assert got.dtype == torch.float32 and amap.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    got.backward()
    ref = fs.detach().double().requires_grad_(True)
    naive_pairwise(ref, ft.double()).backward()
    torch.testing.assert_close(fs.grad.double(), ref.grad, rtol=1e-4, atol=1e-9)

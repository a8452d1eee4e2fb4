"""The pair-wise variants the paper compares its global pair-wise term with.

- MIMIC: regress the teacher's features from the student's through a 1x1 convolution.
- Attention transfer (Zagoruyko & Komodakis, "Paying More Attention to Attention", ICLR 2017):
  match normalised spatial attention maps.
- Local pair-wise: the similarity graph restricted to each node's 8 neighbours.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from skdlib.losses.checks import check_feature_pair, compute_dtype
from skdlib.losses.pairwise import normalised_nodes, pool_nodes

__all__ = [
    "attention_transfer_loss",
    "local_pairwise_loss",
    "make_mimic_adapter",
    "mimic_loss",
]

# The four "forward" neighbour offsets (dy, dx); with their negatives they make the
# 8-neighbourhood. Cosine similarity is symmetric, so each unordered pair is visited once.
_FORWARD_OFFSETS = ((0, 1), (1, -1), (1, 0), (1, 1))


def make_mimic_adapter(student_channels: int, teacher_channels: int) -> nn.Conv2d:
    """A 1x1 convolution (with bias) from the student's channels to the teacher's.

    The caller owns it (and its optimiser), as it is trained with the student.
    """
    if student_channels < 1 or teacher_channels < 1:
        raise ValueError(
            f"channel counts must be >= 1, got student_channels={student_channels}, "
            f"teacher_channels={teacher_channels}"
        )
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)


def mimic_loss(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, *, adapter: nn.Module
) -> torch.Tensor:
    """MIMIC: ``mean((adapter(f_s) - f_t)^2)`` over every element ``(N, C_t, H, W)``.

    Args:
        student_feat: ``(N, C_s, H, W)``.
        teacher_feat: ``(N, C_t, H, W)``; detached inside.
        adapter: maps ``(N, C_s, H, W)`` to ``(N, C_t, H, W)``, e.g.
            :func:`make_mimic_adapter`.

    Returns:
        Scalar tensor (mean over images, channels and positions).

    Raises:
        ValueError: wrong ranks, different batch/spatial sizes, or an adapter output whose
            shape is not the teacher's.
    """
    check_feature_pair(student_feat, teacher_feat)
    mapped = adapter(student_feat)  # (N, C_s, H, W) -> (N, C_t, H, W)
    if mapped.shape != teacher_feat.shape:
        raise ValueError(
            f"adapter output {tuple(mapped.shape)} does not match teacher_feat "
            f"{tuple(teacher_feat.shape)}"
        )
    dtype = compute_dtype(mapped, None)
    return F.mse_loss(mapped.to(dtype), teacher_feat.detach().to(dtype), reduction="mean")


def _attention_map(feat: torch.Tensor, p: float) -> torch.Tensor:
    """``(N, C, H, W)`` -> ``(N, H*W)``: ``sum_c |f|^p``, flattened, unit L2 norm per image."""
    x = feat.to(compute_dtype(feat, None))
    att = x.abs().pow(p).sum(dim=1).flatten(1)  # (N, C, H, W) -> (N, H, W) -> (N, H*W)
    return F.normalize(att, p=2.0, dim=1, eps=1e-12)  # (N, H*W)


def attention_transfer_loss(
    student_feat: torch.Tensor, teacher_feat: torch.Tensor, *, p: float = 2
) -> torch.Tensor:
    """Attention transfer: ``mean_{n,i} (a_s[n, i] - a_t[n, i])^2``.

    ``a[n] = v / ||v||_2`` with ``v = sum_c |f[n, c]|^p`` flattened over positions (Zagoruyko &
    Komodakis, ICLR 2017, the activation-based spatial attention with ``p = 2``). The mean runs
    over the positions and images (the reduction of that paper's public code); the paper writes
    the norm of the difference instead. Channel counts may differ. All-zero maps give 0.

    Args:
        student_feat: ``(N, C_s, H, W)``.
        teacher_feat: ``(N, C_t, H, W)``; detached inside.
        p: exponent, > 0.

    Returns:
        Scalar tensor.
    """
    check_feature_pair(student_feat, teacher_feat)
    if not p > 0:
        raise ValueError(f"p must be > 0, got {p}")
    a_s = _attention_map(student_feat, p)  # (N, H*W)
    a_t = _attention_map(teacher_feat.detach(), p)  # (N, H*W)
    return (a_s - a_t).pow(2).mean()


def local_pairwise_loss(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    *,
    node_size: int | tuple[int, int] = 1,
    pool: str = "avg",
) -> torch.Tensor:
    """Pair-wise loss on the 8-neighbour graph: ``mean over pairs of (a_ij^s - a_ij^t)^2``.

    Nodes are pooled as in :func:`skdlib.losses.pool_nodes`; ``a_ij`` is the cosine similarity
    (same normalisation as the global loss, gradient through the norms). Each node is paired with
    its (up to) 8 neighbours; neighbours outside the map do not exist (no padding): border nodes
    simply have fewer pairs, and the mean is over the valid ordered pairs of all images,
    i.e. ``sum / (N * #pairs)``. Since ``a_ij = a_ji`` the sum over the 4 forward offsets counts
    each unordered pair once, and its mean equals the mean over ordered pairs.

    Args:
        student_feat: ``(N, C_s, H, W)``.
        teacher_feat: ``(N, C_t, H, W)``; detached inside.
        node_size: node granularity, int >= 1 or a pair.
        pool: ``"avg"`` or ``"max"``.

    Returns:
        Scalar tensor.

    Raises:
        ValueError: as :func:`pairwise_similarity_loss`, or a single node (no pair).
    """
    check_feature_pair(student_feat, teacher_feat)
    compute = compute_dtype(student_feat, None)
    fs = pool_nodes(student_feat, node_size=node_size, pool=pool)  # (N, C_s, h, w)
    ft = pool_nodes(teacher_feat.detach(), node_size=node_size, pool=pool)  # (N, C_t, h, w)
    _, _, h, w = fs.shape
    if h * w < 2:
        raise ValueError(f"local_pairwise_loss needs at least 2 nodes, got {h} x {w}")
    fs = normalised_nodes(fs, eps=1e-8, detach_norm=False, dtype=compute)
    ft = normalised_nodes(ft, eps=1e-8, detach_norm=True, dtype=compute)
    fs = fs.unflatten(2, (h, w))  # (N, C_s, n) -> (N, C_s, h, w)
    ft = ft.unflatten(2, (h, w))  # (N, C_t, n) -> (N, C_t, h, w)

    total = fs.new_zeros(())
    count = 0
    for dy, dx in _FORWARD_OFFSETS:
        # Node (y, x) paired with (y + dy, x + dx): both slices are (N, C, h - dy, w - |dx|).
        ys, ye = 0, h - dy
        xs, xe = max(0, -dx), w - max(0, dx)
        if ye <= ys or xe <= xs:
            continue
        a_s = (fs[:, :, ys:ye, xs:xe] * fs[:, :, ys + dy : ye + dy, xs + dx : xe + dx]).sum(1)
        a_t = (ft[:, :, ys:ye, xs:xe] * ft[:, :, ys + dy : ye + dy, xs + dx : xe + dx]).sum(1)
        # (N, h - dy, w - |dx|) similarities of this offset
        total = total + (a_s - a_t).pow(2).sum()
        count += a_s.numel()
    return total / count

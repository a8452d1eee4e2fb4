"""Pair-wise distillation (Eq. 2-3 of the paper): match the cosine-similarity graphs of two maps.

``l_pa = 1/|R|^2 * sum_i sum_j (a_ij^s - a_ij^t)^2`` with ``a_ij = f_i . f_j / (|f_i| |f_j|)``
over a fully connected graph of spatial nodes. The loss never materialises the ``n x n`` similarity
matrices: with column-normalised features ``F`` (``C x n``) the Gram identity

    ||F_s^T F_s - F_t^T F_t||_F^2 = ||F_s F_s^T||_F^2 - 2 ||F_s F_t^T||_F^2 + ||F_t F_t^T||_F^2

gives the same number with ``C x C`` memory (``C_s x C_t`` for the cross term).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F

from skdlib.losses.checks import compute_dtype, full_precision

__all__ = [
    "node_grid",
    "normalised_nodes",
    "pairwise_similarity_loss",
    "pairwise_similarity_map",
    "pool_nodes",
]

logger = logging.getLogger(__name__)

_POOLS = ("avg", "max")


def _node_kernel(
    node_size: int | tuple[int, int], node_fraction: float | None, height: int, width: int
) -> tuple[int, int]:
    """Validate the node options and return the pooling kernel ``(kh, kw)`` (``(1, 1)``: none)."""
    if node_fraction is not None:
        if node_size not in (1, (1, 1)):
            raise ValueError(
                f"give node_size or node_fraction, not both (node_size={node_size!r}, "
                f"node_fraction={node_fraction!r})"
            )
        if isinstance(node_fraction, bool) or not isinstance(node_fraction, (int, float)):
            raise ValueError(f"node_fraction must be a float in (0, 1], got {node_fraction!r}")
        if not 0.0 < float(node_fraction) <= 1.0:
            raise ValueError(f"node_fraction must be in (0, 1], got {node_fraction!r}")
        # The authors' rule: kernel = int(size * fraction), stride = kernel, ceil mode, so that
        # 0.5 on a 65 x 65 map gives kernel 32 and 3 x 3 nodes (the last one covers one row/column).
        # The tiny tolerance keeps e.g. 0.29 * 100 from flooring to 28 through rounding.
        kh = max(1, math.floor(height * float(node_fraction) + 1e-9))
        kw = max(1, math.floor(width * float(node_fraction) + 1e-9))
        return kh, kw
    if isinstance(node_size, tuple) and len(node_size) == 2:
        kh, kw = node_size
    elif isinstance(node_size, int):
        kh = kw = node_size
    else:
        raise ValueError(f"node_size must be an int >= 1 or a pair of them, got {node_size!r}")
    for k in (kh, kw):
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"node_size must be an int >= 1 or a pair of them, got {node_size!r}")
    if kh > height or kw > width:
        raise ValueError(
            f"node_size {node_size!r} is larger than the feature map ({height} x {width})"
        )
    return kh, kw


def pool_nodes(
    feat: torch.Tensor,
    *,
    node_size: int | tuple[int, int] = 1,
    pool: str = "avg",
    node_fraction: float | None = None,
) -> torch.Tensor:
    """Pool a feature map into graph nodes.

    ``node_size = b`` (or ``(bh, bw)``) pools ``b x b`` patches with stride ``b``
    (the paper's node granularity beta). ``node_fraction = r`` instead uses the kernel
    ``(floor(H*r), floor(W*r))`` with the same stride, the rule of the authors' code
    (max pooling, ``r = 0.5``: 3 x 3 nodes on a 65 x 65 map). Both use ``ceil_mode=True`` so the
    nodes cover the whole map; a border node pools only the positions it covers (average over
    those, not over padding).

    Args:
        feat: ``(N, C, H, W)`` features.
        node_size: int >= 1 or a pair; 1 means one node per position (no pooling).
        pool: ``"avg"`` or ``"max"``.
        node_fraction: float in ``(0, 1]`` or ``None``; exclusive with ``node_size != 1``.

    Returns:
        ``(N, C, h, w)`` node features.

    Raises:
        ValueError: wrong rank, unknown ``pool``, ``node_size < 1``, both node options given,
            or a kernel larger than the map.
    """
    if feat.dim() != 4:
        raise ValueError(f"feat must be (N, C, H, W), got shape {tuple(feat.shape)}")
    if pool not in _POOLS:
        raise ValueError(f"pool must be one of {_POOLS}, got {pool!r}")
    kernel = _node_kernel(node_size, node_fraction, feat.shape[-2], feat.shape[-1])
    if kernel == (1, 1):
        return feat
    if pool == "avg":
        # (N, C, H, W) -> (N, C, ceil(H/kh), ceil(W/kw))
        return F.avg_pool2d(feat, kernel, stride=kernel, ceil_mode=True, count_include_pad=False)
    # (N, C, H, W) -> (N, C, ceil(H/kh), ceil(W/kw))
    return F.max_pool2d(feat, kernel, stride=kernel, ceil_mode=True)


def node_grid(
    height: int,
    width: int,
    *,
    node_size: int | tuple[int, int] = 1,
    node_fraction: float | None = None,
) -> tuple[int, int]:
    """The node grid ``(h, w)`` that :func:`pool_nodes` makes of an ``H x W`` map:
    ``(ceil(H / kh), ceil(W / kw))`` for its kernel ``(kh, kw)`` (the last window always starts
    inside the map, stride = kernel). Raises as :func:`pool_nodes` for bad node options."""
    kh, kw = _node_kernel(node_size, node_fraction, height, width)
    return -(-height // kh), -(-width // kw)


def normalised_nodes(
    feat: torch.Tensor, *, eps: float, detach_norm: bool, dtype: torch.dtype
) -> torch.Tensor:
    """``(N, C, h, w)`` -> column-normalised ``(N, C, n)``, ``f / sqrt(|f|^2 + eps^2)``.

    The epsilon inside the square root keeps zero vectors finite in value and gradient (they map
    to zero columns, similarity 0 to everything).
    """
    flat = feat.to(dtype).flatten(2)  # (N, C, h, w) -> (N, C, n)
    norm = torch.linalg.vector_norm(flat, dim=1, keepdim=True)  # (N, C, n) -> (N, 1, n)
    norm = torch.sqrt(norm * norm + eps * eps)  # (N, 1, n); the norm's gradient at 0 is 0
    if detach_norm:
        norm = norm.detach()
    return flat / norm  # (N, C, n)


def _check_node_pair(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    node_size: int | tuple[int, int],
    node_fraction: float | None,
) -> None:
    """Both ``(N, C, H, W)`` with one batch size; their node grids equal (map sizes and
    channels may differ)."""
    for name, f in (("student_feat", student_feat), ("teacher_feat", teacher_feat)):
        if f.dim() != 4:
            raise ValueError(f"{name} must be (N, C, H, W), got shape {tuple(f.shape)}")
    s, t = student_feat.shape, teacher_feat.shape
    opts = {"node_size": node_size, "node_fraction": node_fraction}
    grids = node_grid(s[2], s[3], **opts), node_grid(t[2], t[3], **opts)
    if s[0] != t[0] or grids[0] != grids[1]:
        raise ValueError(
            "student_feat and teacher_feat must have the same batch size and node grid (map "
            f"sizes and channels may differ), got student {tuple(s)} ({grids[0]} nodes) and "
            f"teacher {tuple(t)} ({grids[1]} nodes)"
        )


class _GramDistance(torch.autograd.Function):
    """``||A_s - A_t||_F^2`` per image from column-normalised nodes, through the Gram identity.

    Forward: three batched Gram products (``C_s x C_s``, ``C_s x C_t``, ``C_t x C_t``), squared
    Frobenius norms summed in float64. Backward (student only; the teacher is detached):
    ``d/dF_s = 4 (G_ss F_s - G_st F_t)``, two products written into one buffer, where autograd
    would spend three (it differentiates both operands of ``F_s F_s^T`` separately). Not twice
    differentiable.
    """

    @staticmethod
    def forward(ctx, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        g_ss = torch.bmm(fs, fs.transpose(1, 2))  # (N, C_s, n) x (N, n, C_s) -> (N, C_s, C_s)
        g_st = torch.bmm(fs, ft.transpose(1, 2))  # (N, C_s, n) x (N, n, C_t) -> (N, C_s, C_t)
        g_tt = torch.bmm(ft, ft.transpose(1, 2))  # (N, C_t, n) x (N, n, C_t) -> (N, C_t, C_t)
        ctx.save_for_backward(fs, ft, g_ss, g_st)
        sq = [g.pow(2).sum(dim=(1, 2), dtype=torch.float64) for g in (g_ss, g_st, g_tt)]  # (N,)
        return sq[0] - 2.0 * sq[1] + sq[2]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(  # type: ignore[override]
        ctx, grad_total: torch.Tensor
    ) -> tuple[torch.Tensor | None, None]:
        fs, ft, g_ss, g_st = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        with full_precision(fs.device):
            grad = torch.bmm(g_ss, fs)  # (N, C_s, C_s) x (N, C_s, n) -> (N, C_s, n)
            grad.baddbmm_(g_st, ft, alpha=-1.0)  # -= (N, C_s, C_t) x (N, C_t, n)
            scale = (4.0 * grad_total).to(grad.dtype).reshape(-1, 1, 1)  # (N,) -> (N, 1, 1)
            return grad.mul_(scale), None


def pairwise_similarity_loss(
    student_feat: torch.Tensor,
    teacher_feat: torch.Tensor,
    *,
    node_size: int | tuple[int, int] = 1,
    pool: str = "avg",
    node_fraction: float | None = None,
    detach_norm: bool = False,
    eps: float = 1e-8,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Pair-wise similarity distillation loss, Eq. 2-3, fully connected graph.

    ``mean over images of 1/n^2 * sum_{i,j} (a_ij^s - a_ij^t)^2``, ``a_ij`` the cosine similarity
    of nodes ``i`` and ``j`` (``n`` nodes after pooling, see :func:`pool_nodes`). Computed
    exactly through the Gram identity (module docstring): memory ``O(C^2)``, time
    ``O(C^2 n)`` instead of ``O(n^2)`` and ``O(C n^2)``; no ``n x n`` matrix is built.

    Numerics: the Gram products run in ``dtype`` (float32 by default, float64 for float64
    inputs) and their squared Frobenius norms are summed in float64. The identity subtracts
    terms of size ``~ n^2 * mean(a^2)`` to get ``n^2 * loss``, so the absolute error of the
    loss is about float32 epsilon times ``mean(a_ij^2)`` (measured: ~1e-6 relative at
    8192 nodes, 512 channels); pass ``dtype=torch.float64`` when the loss is many orders of
    magnitude below ``mean(a^2)`` (student almost equal to the teacher). A slightly negative
    result of the cancellation is clamped at 0.

    Autocast is switched off inside (the products always run in ``dtype``), so the loss can be
    called from an autocast region.

    Gradients: the Gram step has a hand-written backward (one fused pair of products; not twice
    differentiable). By default they flow through the norms, the true gradient of Eq. 2 (what the
    naive ``n x n`` formulation gives under autograd). ``detach_norm=True`` divides by detached
    norms, as the authors' code does. Zero feature vectors are safe: ``f / sqrt(|f|^2 + eps^2)``.
    The teacher's features are detached inside.

    Departures of the authors' code: it pools with max pooling and a kernel of half the map
    (``pool="max", node_fraction=0.5`` here), detaches the norms, and adds ``1e-8`` to the norm
    rather than inside the square root (same value up to ~1e-8 relative).

    Maps of two sizes: only the node grids must be equal (:func:`node_grid`; e.g.
    ``node_fraction`` gives the same grid on maps of any size); each map is pooled with its own
    kernel then. The training step brings maps whose grids differ to one grid first
    (:func:`skdlib.train.terms.on_one_grid`).

    Args:
        student_feat: ``(N, C_s, H_s, W_s)``.
        teacher_feat: ``(N, C_t, H_t, W_t)``; channel counts and map sizes may differ where the
            node grids are equal; ``N`` must match.
        node_size: node granularity beta, int >= 1 or ``(bh, bw)``.
        pool: ``"avg"`` or ``"max"``.
        node_fraction: the authors' fractional kernel instead of ``node_size``.
        detach_norm: detach the L2 norms (the authors' gradient).
        eps: norm epsilon.
        dtype: computation dtype, ``None`` (float32, or float64 for float64 inputs),
            ``torch.float32`` or ``torch.float64``.

    Returns:
        Scalar tensor in the computation dtype.

    Raises:
        ValueError: wrong ranks, different batch sizes or node grids, bad node options, bad dtype.
    """
    _check_node_pair(student_feat, teacher_feat, node_size, node_fraction)
    compute = compute_dtype(student_feat, dtype)
    opts = {"node_size": node_size, "pool": pool, "node_fraction": node_fraction}
    with full_precision(student_feat.device):
        fs = pool_nodes(student_feat, **opts)  # (N, C_s, h, w)
        ft = pool_nodes(teacher_feat.detach(), **opts)  # (N, C_t, h, w), the same grid
        n = fs.shape[-2] * fs.shape[-1]
        fs = normalised_nodes(fs, eps=eps, detach_norm=detach_norm, dtype=compute)  # (N, C_s, n)
        ft = normalised_nodes(ft, eps=eps, detach_norm=True, dtype=compute)  # (N, C_t, n)
        total = _GramDistance.apply(fs, ft)  # (N,) float64: ||A_s - A_t||_F^2 per image
        per_image = total.clamp_min(0.0) / float(n * n)  # (N,)
        return per_image.mean().to(compute)


def pairwise_similarity_map(
    feat: torch.Tensor,
    *,
    node_size: int | tuple[int, int] = 1,
    pool: str = "avg",
    node_fraction: float | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """The naive ``n x n`` cosine-similarity matrix of the nodes of each image.

    For figures and small inputs only: memory is ``O(n^2)`` (``N * n^2`` numbers; 8192 nodes
    already need 256 MiB per image). :func:`pairwise_similarity_loss` never calls it. Row ``i``
    reshaped to ``(h, w)`` is the affinity map of node ``i`` (nodes in row-major order).

    Args:
        feat: ``(N, C, H, W)`` features.
        node_size, pool, node_fraction: as in :func:`pool_nodes`.
        eps: norm epsilon, ``f / sqrt(|f|^2 + eps^2)``.

    Returns:
        ``(N, n, n)`` with ``n = h * w`` nodes after pooling, float32 (float64 for float64 input).
    """
    with full_precision(feat.device):
        nodes = pool_nodes(feat, node_size=node_size, pool=pool, node_fraction=node_fraction)
        f = normalised_nodes(
            nodes, eps=eps, detach_norm=False, dtype=compute_dtype(feat, None)
        )  # (N, C, n)
        return torch.einsum("bci,bcj->bij", f, f)  # (N, C, n) x (N, C, n) -> (N, n, n)

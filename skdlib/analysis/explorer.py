"""What the explorer chapter computes: predictions, affinity maps, KL maps and critic scores.

:class:`ExplorerModels` holds the teacher, the students, the critic of the holistic run and the
validation set. :func:`load_explorer_models` reads them from a runs tree
(:class:`skdlib.analysis.runs.RunsTree`); :func:`random_explorer_models` builds
small random-weight networks on a freshly generated embedded data set (smoke mode, or when no
runs exist). :func:`explore` answers one (image, pixel) query as a flat dict of numpy arrays and
floats. Everything that depends on the image only (network outputs, the ``n x n`` similarity
matrices of the ``"head"`` features, KL maps, critic scores) is computed once per image and
cached, so moving the pixel only slices cached arrays.

The affinity map of a pixel is the row of :func:`skdlib.losses.pairwise_similarity_map` (cosine
similarity of the pooled ``"head"`` features) of the node that holds the pixel, reshaped to the
node grid, as in the pair-wise chapter. Nodes are ``beta x beta`` average-pooled patches with
the smallest ``beta`` that keeps the node count at most ``max_nodes`` (``beta = 1`` on the
quick profile's 16 x 32 maps; ``beta = 4`` on the 128 x 256 maps of a Cityscapes image, 2048
nodes, a 16 MiB matrix per network). Memory per cached image: one such matrix and one ``int16``
prediction map per network, and the small logits.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from skdlib.analysis.runs import RunsTree

logger = logging.getLogger(__name__)

TEACHER = "teacher"
#: Display name -> ``(experiment, seed)`` of the students the chapter compares.
DEFAULT_STUDENTS: Mapping[str, tuple[str, int]] = {
    "student w/o HO": ("pi_pa", 0),
    "student w/ HO": ("pi_pa_ho", 0),
}
#: The run whose ``last.pt`` holds the critic (the discriminator of the holistic term).
DEFAULT_CRITIC_RUN = ("pi_pa_ho", 0)
#: The feature map the pair-wise term runs on (the PSP-module output).
FEATURE = "head"


@dataclass
class ImageOutputs:
    """Everything about one validation image that does not depend on the chosen pixel.

    Attributes:
        image: ``(H, W, 3)`` RGB in ``[0, 1]``.
        label: ``(H, W)`` ground truth (255 = ignore).
        logits: name -> ``(1, K, h', w')`` float32 logits at the network's output resolution
            (small: per-pixel probabilities are interpolated from them on demand).
        predictions: name -> ``(H, W)`` int16 arg-max class of the logits upsampled to the image.
        similarity: name -> ``(n, n)`` cosine similarities of the nodes of ``features["head"]``.
        grid: name -> ``(h, w)`` node grid of ``similarity`` (``n = h * w``, row-major).
        kl: student name -> ``(h', w')`` per-pixel ``KL(q^t || q^s)`` at the logits' resolution.
        scores: name -> the critic's embedding score ``D(Q | I)`` (empty without a critic).
    """

    image: np.ndarray
    label: np.ndarray
    logits: dict[str, torch.Tensor]
    predictions: dict[str, np.ndarray]
    similarity: dict[str, np.ndarray]
    grid: dict[str, tuple[int, int]]
    kl: dict[str, np.ndarray]
    scores: dict[str, float]


@dataclass
class ExplorerModels:
    """The networks and data the explorer queries, plus a small per-image cache.

    Attributes:
        teacher: the teacher network (eval mode).
        students: display name -> student network (eval mode), in display order.
        critic: the holistic term's discriminator, or ``None`` (no scores then).
        dataset: validation items ``{"image": (3, H, W) in [0, 1], "label": (H, W)}`` with
            ``class_names`` and ``palette``.
        source: where the models come from, for the chapter's caption.
        settings: display name -> experiment name (``"teacher"`` for the teacher).
        max_nodes: the largest node count of an affinity graph (sets the pooling ``beta``).
        cache_size: how many images' outputs are kept.
    """

    teacher: nn.Module
    students: dict[str, nn.Module]
    critic: nn.Module | None
    dataset: Any
    source: str = ""
    max_nodes: int = 2048
    #: Display name -> the experiment it was trained in (its colour in the figures).
    settings: dict[str, str] = field(default_factory=dict)
    cache_size: int = 4
    _cache: OrderedDict[int, ImageOutputs] = field(default_factory=OrderedDict, repr=False)

    def __post_init__(self) -> None:
        if not self.students:
            raise ValueError("students must name at least one student network, got none")
        if TEACHER in self.students:
            raise ValueError(f"students: the name {TEACHER!r} is reserved for the teacher")
        if self.max_nodes < 1:
            raise ValueError(f"max_nodes must be >= 1, got {self.max_nodes}")
        if self.cache_size < 1:
            raise ValueError(f"cache_size must be >= 1, got {self.cache_size}")
        for net in (
            self.teacher,
            *self.students.values(),
            *([self.critic] if self.critic is not None else []),
        ):
            net.eval()

    @property
    def names(self) -> list[str]:
        """``"teacher"`` then the students' display names."""
        return [TEACHER, *self.students]

    @property
    def networks(self) -> dict[str, nn.Module]:
        return {TEACHER: self.teacher, **self.students}

    @property
    def num_images(self) -> int:
        return len(self.dataset)

    @property
    def class_names(self) -> list[str]:
        return list(self.dataset.class_names)

    @property
    def palette(self) -> list[tuple[int, int, int]]:
        return [tuple(int(v) for v in colour) for colour in self.dataset.palette]

    def image_outputs(self, image_index: int) -> ImageOutputs:
        """The cached per-image outputs of ``image_index`` (computed on first use)."""
        if (
            not isinstance(image_index, (int, np.integer))
            or not 0 <= int(image_index) < self.num_images
        ):
            raise ValueError(
                f"image_index must be an int in [0, {self.num_images}), got {image_index!r}"
            )
        index = int(image_index)
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        outputs = _compute_image_outputs(self, index)
        self._cache[index] = outputs
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return outputs


# --------------------------------------------------------------------------------------------------
# Per-image computation
# --------------------------------------------------------------------------------------------------
def node_size_for(height: int, width: int, max_nodes: int) -> int:
    """The smallest pooling size ``beta`` with ``ceil(H / beta) * ceil(W / beta) <= max_nodes``.

    Raises:
        ValueError: a non-positive size or ``max_nodes``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"height and width must be >= 1, got {height} x {width}")
    if max_nodes < 1:
        raise ValueError(f"max_nodes must be >= 1, got {max_nodes}")
    beta = 1
    while -(-height // beta) * -(-width // beta) > max_nodes:
        beta += 1
    return beta


def _device_of(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def _compute_image_outputs(models: ExplorerModels, index: int) -> ImageOutputs:
    from skdlib.data.transforms import normalize
    from skdlib.losses import pairwise_similarity_map, pixelwise_kl_map
    from skdlib.losses.pairwise import pool_nodes

    item = models.dataset[index]
    image = item["image"]  # (3, H, W) in [0, 1]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"dataset item {index}: image must be (3, H, W), got shape {tuple(image.shape)}"
        )
    height, width = image.shape[-2:]
    logits: dict[str, torch.Tensor] = {}
    predictions: dict[str, np.ndarray] = {}
    similarity: dict[str, np.ndarray] = {}
    grid: dict[str, tuple[int, int]] = {}
    with torch.no_grad():
        for name, net in models.networks.items():
            device = _device_of(net)
            batch = normalize(image.unsqueeze(0).to(device))  # (3, H, W) -> (1, 3, H, W)
            out = net(batch)
            if FEATURE not in out.features:
                raise ValueError(
                    f"network {name!r} returns no features[{FEATURE!r}] (has "
                    f"{sorted(out.features)})"
                )
            logits[name] = out.logits.float().cpu()  # (1, K, h', w')
            up = F.interpolate(
                logits[name], size=(height, width), mode="bilinear", align_corners=False
            )  # (1, K, H, W)
            predictions[name] = (
                up[0].argmax(dim=0).to(torch.int16).numpy()
            )  # (1, K, H, W) -> (H, W)
            feat = out.features[FEATURE].float()  # (1, C, h, w)
            beta = node_size_for(feat.shape[-2], feat.shape[-1], models.max_nodes)
            gh, gw = pool_nodes(feat, node_size=beta).shape[-2:]  # (1, C, h, w) -> (1, C, gh, gw)
            grid[name] = (int(gh), int(gw))
            similarity[name] = (
                pairwise_similarity_map(feat, node_size=beta)[0].cpu().numpy()
            )  # (1, n, n) -> (n, n)
        teacher_logits = logits[TEACHER]
        kl = {
            name: pixelwise_kl_map(logits[name], teacher_logits)[0].numpy()  # (h', w')
            for name in models.students
        }
        scores: dict[str, float] = {}
        if models.critic is not None:
            device = _device_of(models.critic)
            condition = normalize(image.unsqueeze(0).to(device))  # (3, H, W) -> (1, 3, H, W)
            for name, value in logits.items():
                seg_map = models.critic.prepare_input(value.to(device))  # (1, K, h', w')
                scores[name] = float(models.critic(seg_map, condition)[0])
    label = (
        item["label"].cpu().numpy()
        if isinstance(item["label"], torch.Tensor)
        else np.asarray(item["label"])
    )
    return ImageOutputs(
        image=image.permute(1, 2, 0).cpu().numpy(),  # (3, H, W) -> (H, W, 3)
        label=label,
        logits=logits,
        predictions=predictions,
        similarity=similarity,
        grid=grid,
        kl=kl,
        scores=scores,
    )


def probabilities_at(
    logits: torch.Tensor, pixel: tuple[int, int], size: tuple[int, int]
) -> np.ndarray:
    """Class probabilities ``(K,)`` at ``pixel`` of the logits ``(1, K, h, w)`` upsampled to
    ``size``.

    Equal to ``softmax(F.interpolate(logits, size, mode="bilinear", align_corners=False))`` at
    that pixel, without building the ``(K, H, W)`` map: the pixel centre ``(i + 0.5) / H`` is
    sampled with ``grid_sample`` (bilinear, ``align_corners=False``, border clamping, which is
    what ``interpolate`` does at the edges).
    """
    height, width = size
    y = (2 * pixel[0] + 1) / height - 1  # normalised pixel centre in [-1, 1]
    x = (2 * pixel[1] + 1) / width - 1
    grid = torch.tensor(
        [[[[x, y]]]], dtype=logits.dtype, device=logits.device
    )  # (1, 1, 1, 2) as (x, y)
    sampled = F.grid_sample(
        logits, grid, mode="bilinear", padding_mode="border", align_corners=False
    )  # (1, K, 1, 1)
    return torch.softmax(sampled.flatten(), dim=0).cpu().numpy()  # (1, K, 1, 1) -> (K,)


def _scale_index(position: int, size: int, new_size: int) -> int:
    """The cell of a ``new_size`` grid that holds pixel ``position`` of a ``size``-pixel axis."""
    return min(position * new_size // size, new_size - 1)


def explore(models: ExplorerModels, image_index: int, pixel: tuple[int, int]) -> dict[str, Any]:
    """Everything the explorer shows for one validation image and one pixel.

    Args:
        models: the networks, critic and data (:func:`load_explorer_models`).
        image_index: index into ``models.dataset``.
        pixel: ``(row, col)`` in image coordinates.

    Returns:
        A flat dict (names from ``models.names``; ``student`` ranges over the students):

        - ``"image"`` ``(H, W, 3)`` in [0, 1], ``"label"`` ``(H, W)``, ``"pixel"`` ``(2,)``.
        - ``"prediction/<name>"`` ``(H, W)`` int16, ``"probabilities/<name>"`` ``(K,)`` at the
          pixel.
        - ``"affinity/<name>"`` ``(h, w)``: the pixel's node's row of the similarity matrix;
          ``"node/<name>"`` ``(2,)`` that node's (row, col) in the grid.
        - ``"affinity_mse/<student>"`` float: mean squared difference of the student's and the
          teacher's affinity maps (this row's share of ``l_pa``).
        - ``"kl/<student>"`` ``(h', w')``: per-pixel KL(teacher || student) at the logits'
          resolution; ``"kl_at_pixel/<student>"`` and ``"kl_mean/<student>"`` floats.
        - ``"score/<name>"`` float: the critic's embedding score; ``"score_gap/<student>"`` float:
          student minus teacher (present only with a critic).

    Raises:
        ValueError: ``image_index`` out of range, or ``pixel`` not two ints inside the image.
    """
    outputs = models.image_outputs(image_index)
    height, width = outputs.label.shape
    if (
        len(pixel) != 2
        or not all(isinstance(v, (int, np.integer)) for v in pixel)
        or not (0 <= int(pixel[0]) < height and 0 <= int(pixel[1]) < width)
    ):
        raise ValueError(
            f"pixel must be (row, col) ints inside the {height} x {width} image, got {pixel!r}"
        )
    row, col = int(pixel[0]), int(pixel[1])
    result: dict[str, Any] = {
        "image": outputs.image,
        "label": outputs.label,
        "pixel": np.array([row, col]),
    }
    affinity: dict[str, np.ndarray] = {}
    for name in models.names:
        result[f"prediction/{name}"] = outputs.predictions[name]
        result[f"probabilities/{name}"] = probabilities_at(
            outputs.logits[name], (row, col), (height, width)
        )
        gh, gw = outputs.grid[name]
        node = (_scale_index(row, height, gh), _scale_index(col, width, gw))
        affinity[name] = outputs.similarity[name][node[0] * gw + node[1]].reshape(
            gh, gw
        )  # (n,) -> (gh, gw)
        result[f"affinity/{name}"] = affinity[name]
        result[f"node/{name}"] = np.array(node)
    for name in models.students:
        if affinity[name].shape == affinity[TEACHER].shape:
            result[f"affinity_mse/{name}"] = float(
                np.mean((affinity[name] - affinity[TEACHER]) ** 2)
            )
        kl = outputs.kl[name]
        result[f"kl/{name}"] = kl
        result[f"kl_at_pixel/{name}"] = float(
            kl[_scale_index(row, height, kl.shape[0]), _scale_index(col, width, kl.shape[1])]
        )
        result[f"kl_mean/{name}"] = float(kl.mean())
    if outputs.scores:
        for name in models.names:
            result[f"score/{name}"] = outputs.scores[name]
        for name in models.students:
            result[f"score_gap/{name}"] = outputs.scores[name] - outputs.scores[TEACHER]
    return result


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------
def load_explorer_models(
    tree: RunsTree,
    *,
    students: Mapping[str, tuple[str, int]] = DEFAULT_STUDENTS,
    critic_run: tuple[str, int] | None = DEFAULT_CRITIC_RUN,
    device: str | torch.device = "cpu",
    max_nodes: int = 2048,
) -> ExplorerModels:
    """Teacher, students, critic and validation set from a runs tree.

    ``students`` maps a display name to an ``(experiment, seed)`` run of ``tree``; the teacher
    is the first student's experiment's teacher (:meth:`RunsTree.teacher`); ``critic_run`` is
    the run whose ``last.pt`` holds the critic (``None``: no scores). The validation set is the
    first student's ``data`` section (its root resolved by :meth:`RunsTree.dataset`).

    Raises:
        FileNotFoundError: a run folder, its ``config.yaml`` or a checkpoint is missing.
        ValueError: no students, a run not in the index, or the critic's run saved no critic.
    """
    if not students:
        raise ValueError("students must name at least one (experiment, seed) run, got none")
    first = next(iter(students.values()))
    runs = {
        TEACHER: tree.teacher(first[0]),
        **{name: tree.run(experiment, seed) for name, (experiment, seed) in students.items()},
    }
    for name, run in runs.items():
        if not run.config.is_file():
            raise FileNotFoundError(
                f"{name}: no run folder with a config.yaml at {tree.display(run.root)}"
            )
    cfg = runs[next(iter(students))].read_config()
    dataset = tree.dataset(cfg, cfg.data.val_split)
    torch_device = str(torch.device(device))
    networks = {name: tree.network(run, device=torch_device) for name, run in runs.items()}
    critic = tree.critic(tree.run(*critic_run), device=torch_device)[0] if critic_run else None
    logger.info("explorer models loaded from %s", tree.display(tree.profile_dir))
    return ExplorerModels(
        teacher=networks.pop(TEACHER),
        students=networks,
        critic=critic,
        dataset=dataset,
        source=f"runs of `{tree.name}`: "
        + ", ".join(f"{name} {tree.display(run.root)}" for name, run in runs.items()),
        max_nodes=max_nodes,
        settings={TEACHER: TEACHER, **{name: exp for name, (exp, _) in students.items()}},
    )


def random_explorer_models(
    data_root: str | os.PathLike[str] | None = None,
    *,
    student_names: Sequence[str] = tuple(DEFAULT_STUDENTS),
    num_images: int = 3,
    height: int = 128,
    width: int = 256,
    seed: int = 0,
    max_nodes: int = 2048,
) -> ExplorerModels:
    """Random-weight stand-ins (smoke mode, or no runs yet) on a generated embedded val set.

    Teacher ``pspnet_resnet18`` width 0.5, students width 0.25, a small image-conditioned critic
    (widths 16-32-64-64); weights drawn from ``seed`` without touching the global RNG. The data
    set (``num_images`` val images of ``height x width``) is generated under ``data_root``
    (default: a new temporary folder).

    Raises:
        ValueError: ``num_images < 1`` or image sides that are not multiples of 8 of at least 128
            (the critic needs 16 x 16 logit maps).
    """
    from skdlib.data import build_dataset, ensure_embedded
    from skdlib.models import build_model
    from skdlib.models.discriminator import Discriminator

    if num_images < 1:
        raise ValueError(f"num_images must be >= 1, got {num_images}")
    if min(height, width) < 128 or height % 8 or width % 8:
        raise ValueError(
            f"height and width must be multiples of 8 and >= 128, got {height} x {width}"
        )
    root = (
        Path(data_root)
        if data_root is not None
        else Path(tempfile.mkdtemp(prefix="skd-explorer-")) / "embedded"
    )
    data = ensure_embedded(root, height=height, width=width, num_train=1, num_val=num_images)
    dataset = build_dataset("embedded", data, "val")
    k = dataset.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        teacher = build_model("pspnet_resnet18", k, width=0.5)
        students = {name: build_model("pspnet_resnet18", k, width=0.25) for name in student_names}
        critic = Discriminator(k, widths=(16, 32, 64, 64), use_image=True)
    return ExplorerModels(
        teacher=teacher,
        students=students,
        critic=critic,
        dataset=dataset,
        source=f"random weights (seed {seed}) on a generated embedded val set",
        max_nodes=max_nodes,
        settings={
            TEACHER: TEACHER,
            **{n: DEFAULT_STUDENTS[n][0] for n in students if n in DEFAULT_STUDENTS},
        },
    )

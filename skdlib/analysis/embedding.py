"""Fig. 3 of the paper: the embedding network's scores of teacher and student segmentation maps.

The critic ``D(Q | I)`` trained by the holistic term scores a segmentation map given its image;
higher means "more teacher-like". :func:`embedding_scores` scores, for every validation image,
the teacher's map and each student's map with one trained critic, preparing the inputs exactly as
training does: the image normalised with the ImageNet statistics
(:func:`skdlib.data.transforms.normalize`, as the training transform and the validation pass),
the network's 1/8 logits turned into the critic's input by ``critic.prepare_input`` (softmax, or
raw logits for the authors' ``master`` critic), and the normalised image as the condition. Every
network runs in eval mode (the critic's spectral norms and input batch-norm use their stored
statistics), so the scores are deterministic.

:func:`load_fig3_models` builds the teacher, the two students (without and with the holistic
term) and the critic from a runs tree written by the pipeline (see
:mod:`skdlib.analysis.runs`). That critic trained the holistic student, so it favours it;
:func:`train_fair_judge` trains a second critic of the same architecture afresh, after the runs,
on the teacher's maps against the maps of both students: an independent judge.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import nn

if TYPE_CHECKING:
    from skdlib.analysis.runs import RunsTree

__all__ = [
    "Fig3Models",
    "JudgeTraining",
    "embedding_scores",
    "load_fig3_models",
    "predict_logits",
    "train_fair_judge",
]

logger = logging.getLogger(__name__)


def _logits(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """The network's logits ``(N, K, H/8, W/8)`` (float32) for a normalised batch
    ``(N, 3, H, W)``."""
    return model(image).logits.float()


@torch.no_grad()
def predict_logits(
    models: Mapping[str, nn.Module], image: torch.Tensor, *, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """Logits of each model for one data-set image ``(3, H, W)`` in [0, 1]: ``{name: (K, h, w)}`` on
    the CPU.

    The image is normalised as in training; every model runs in eval mode (its mode is restored).
    """
    from skdlib.data.transforms import normalize

    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    batch = normalize(image[None].float().to(device))  # (3, H, W) -> (1, 3, H, W)
    out = {}
    for name, model in models.items():
        was_training = model.training
        model.eval()
        try:
            out[name] = _logits(model, batch)[0].cpu()  # (1, K, h, w) -> (K, h, w)
        finally:
            model.train(was_training)
    return out


@torch.no_grad()
def embedding_scores(
    critic: nn.Module,
    teacher: nn.Module,
    students: Mapping[str, nn.Module],
    dataset: Any,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 8,
) -> pd.DataFrame:
    """The critic's score of the teacher's and each student's map, per image of ``dataset``.

    Args:
        critic: a trained :class:`skdlib.models.discriminator.Discriminator` (or any module with
            ``prepare_input(logits)`` and ``forward(seg_map, image) -> (N,)``).
        teacher: the teacher network (returns a ``SegmentationOutput``).
        students: ``{label: network}``; labels become column names (not ``"teacher"``).
        dataset: items ``{"image": (3, H, W) in [0, 1], "name": str, ...}`` (e.g. the val split).
        device: where the networks run (they are moved there and their modes restored).
        batch_size: images per forward pass (consecutive images of one size are stacked).

    Returns:
        One row per image (data-set order): ``index``, ``name``, ``teacher`` (score of the
        teacher's map), one column per student with its score, and ``diff/<student>`` = student
        score minus teacher score (Fig. 3a's quantity).

    Raises:
        ValueError: empty ``students`` or dataset, a student named ``"teacher"``,
            ``batch_size < 1``, or a critic without ``prepare_input``.
    """
    from skdlib.data.transforms import normalize

    if not students:
        raise ValueError("students: give at least one {label: network}")
    if "teacher" in students:
        raise ValueError("students: the label 'teacher' is reserved for the teacher's column")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty: nothing to score")
    if not hasattr(critic, "prepare_input"):
        raise ValueError(f"critic: {type(critic).__name__} has no prepare_input(logits) method")
    device = torch.device(device)
    networks: dict[str, nn.Module] = {"teacher": teacher, **students}
    modules = [critic, *networks.values()]
    modes = [m.training for m in modules]
    for module in modules:
        module.to(device).eval()
    rows: list[dict[str, Any]] = []
    try:
        start = 0
        while start < len(dataset):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            chunks: list[list[tuple[int, dict[str, Any]]]] = []
            # consecutive images of one size share a forward pass
            for offset, item in enumerate(items):
                if chunks and chunks[-1][0][1]["image"].shape == item["image"].shape:
                    chunks[-1].append((start + offset, item))
                else:
                    chunks.append([(start + offset, item)])
            for chunk in chunks:
                image = (
                    torch.stack([item["image"] for _, item in chunk]).float().to(device)
                )  # (B, 3, H, W)
                image = normalize(image)  # (B, 3, H, W), ImageNet statistics as in training
                scores = {
                    name: critic(critic.prepare_input(_logits(net, image)), image)
                    .float()
                    .cpu()  # (B,)
                    for name, net in networks.items()
                }
                for j, (index, item) in enumerate(chunk):
                    row: dict[str, Any] = {"index": index, "name": str(item.get("name", index))}
                    row.update({name: float(values[j]) for name, values in scores.items()})
                    rows.append(row)
            start += len(items)
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)
    table = pd.DataFrame(rows)
    for name in students:
        table[f"diff/{name}"] = table[name] - table["teacher"]
    return table


# --------------------------------------------------------------------------------------------------
# Models from a runs tree
# --------------------------------------------------------------------------------------------------
@dataclass
class Fig3Models:
    """The networks of Fig. 3, in eval mode on the CPU, their data and where each came from.

    Attributes:
        sources: role -> the run folder (relative to the project, or inside the tree) it came
            from, for the chapter's table.
        val_set, train_set: the critic's run's validation and training splits
            (:meth:`skdlib.analysis.runs.RunsTree.dataset`).
    """

    teacher: nn.Module
    students: dict[str, nn.Module]
    critic: nn.Module
    critic_config: Any
    num_classes: int
    sources: dict[str, str] = field(default_factory=dict)
    val_set: Any = None
    train_set: Any = None
    #: Role (``"teacher"``, ``"w/o HO"``, ``"w/ HO"``) -> the experiment it was trained in.
    settings: dict[str, str] = field(default_factory=dict)


def load_fig3_models(
    tree: RunsTree,
    *,
    with_ho: str = "pi_pa_ho",
    without_ho: str = "pi_pa",
    seed: int = 0,
) -> Fig3Models:
    """Teacher, students ``{"w/o HO": ..., "w/ HO": ...}`` and the critic of the ``with_ho`` run
    of ``tree``.

    * teacher: the teacher run the ``with_ho`` experiment learns from (its ``teacher_dir``,
      :meth:`RunsTree.teacher`), the network it trained loaded strictly from its
      ``checkpoints/final.pt``;
    * students: each run's ``model.student`` with its ``student_options``, loaded strictly from
      ``checkpoints/final.pt``;
    * critic: :class:`~skdlib.models.discriminator.Discriminator` with the ``with_ho`` run's
      ``distill.disc_*`` options, loaded from ``checkpoints/last.pt["critic"]``.

    Raises:
        FileNotFoundError: a run folder lacks a checkpoint or config.
        ValueError: an experiment or seed not in the index, a run without a critic, no teacher.
    """
    teacher_dir = tree.teacher(with_ho)
    ho_dir = tree.run(with_ho, seed)
    plain_dir = tree.run(without_ho, seed)
    ho_cfg = ho_dir.read_config()
    students = {"w/o HO": tree.network(plain_dir), "w/ HO": tree.network(ho_dir)}
    try:
        critic, iteration = tree.critic(ho_dir)
    except ValueError as error:
        raise ValueError(f"with_ho: {error}") from error
    sources = {
        "teacher": tree.display(teacher_dir.root),
        "w/o HO": tree.display(plain_dir.root),
        "w/ HO": tree.display(ho_dir.root),
        "critic": f"{tree.display(ho_dir.last)} (iteration {iteration})",
    }
    logger.info("Fig. 3 models: %s", sources)
    return Fig3Models(
        teacher=tree.network(teacher_dir),
        students=students,
        critic=critic,
        critic_config=ho_cfg,
        num_classes=tree.classes_of(ho_dir),
        sources=sources,
        val_set=tree.dataset(ho_cfg, ho_cfg.data.val_split),
        train_set=tree.dataset(ho_cfg, ho_cfg.data.train_split),
        settings={"teacher": "teacher", "w/o HO": without_ho, "w/ HO": with_ho},
    )


# --------------------------------------------------------------------------------------------------
# A fair judge: a critic trained afresh on both students' maps
# --------------------------------------------------------------------------------------------------
@dataclass
class JudgeTraining:
    """A critic trained after the runs, and the record of its training."""

    critic: nn.Module
    history: pd.DataFrame  #: per iteration: iter, critic, gp, score_teacher, score_student


def _train_batch(
    dataset: Any, iteration: int, *, batch_size: int, seed: int, device: torch.device
) -> torch.Tensor:
    """A normalised batch ``(B, 3, H, W)`` of training images, drawn with the sample order of
    the training loop (a function of ``(seed, iteration)``)."""
    from skdlib.data.transforms import normalize
    from skdlib.train.sampling import batch_indices

    indices = batch_indices(iteration, num_items=len(dataset), batch_size=batch_size, seed=seed)
    image = torch.stack([dataset[i]["image"] for i in indices]).float().to(device)  # (B, 3, H, W)
    return normalize(image)


def train_fair_judge(
    config: Any,
    teacher: nn.Module,
    students: Mapping[str, nn.Module],
    dataset: Any,
    *,
    iters: int,
    batch_size: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> JudgeTraining:
    """Train a critic of the architecture and optimiser of ``config.distill`` from scratch, with
    the teacher's maps as real and the maps of *every* student as fake, on ``dataset`` (the
    training split). Neither student was trained against it, so its scores of their maps are a
    fairer judge of "teacher-like" than the critic that trained the holistic student.

    Each iteration draws ``batch_size`` training images (no augmentation), runs the networks in
    eval mode, and takes one step of :func:`skdlib.train.step.critic_step` on the teacher's maps
    repeated once per student against the students' maps concatenated (WGAN-GP or hinge, the
    gradient penalty and the loss scale of ``config.distill``), the learning rate following the
    poly schedule over ``iters``. The critic is returned in eval mode on ``device``.

    Raises:
        ValueError: ``iters < 1``, ``batch_size < 1``, no student, or an empty dataset.
    """
    from skdlib.train.build import build_critic, build_critic_optimizer
    from skdlib.train.loop import poly_lr
    from skdlib.train.sampling import derive_seed
    from skdlib.train.step import StepContext, critic_step

    if iters < 1 or batch_size < 1:
        raise ValueError(f"iters and batch_size must be >= 1, got {iters} and {batch_size}")
    if not students or len(dataset) == 0:
        raise ValueError("train_fair_judge needs at least one student and a non-empty dataset")
    device = torch.device(device)
    num_classes = int(getattr(teacher, "num_classes", 0)) or dataset.num_classes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "judge"))
        critic = build_critic(config, num_classes).to(device).train()
    optimizer = build_critic_optimizer(config, critic)
    generator = torch.Generator(device=device)
    ctx = StepContext(distill=config.distill, critic_generator=generator)
    networks = [teacher, *students.values()]
    for net in networks:
        net.to(device).eval()
    rows = []
    for iteration in range(iters):
        generator.manual_seed(derive_seed(seed, "judge-gp", iteration))
        for group in optimizer.param_groups:
            group["lr"] = poly_lr(config.distill.disc_lr, iteration, iters, config.train.poly_power)
        image = _train_batch(dataset, iteration, batch_size=batch_size, seed=seed, device=device)
        with torch.no_grad():
            t_logits = _logits(teacher, image)  # (B, K, h, w)
            s_logits = torch.cat([_logits(net, image) for net in students.values()])  # (S*B, ...)
        reals = t_logits.repeat(len(students), 1, 1, 1)  # (B, K, h, w) -> (S*B, K, h, w)
        images = image.repeat(len(students), 1, 1, 1)  # (B, 3, H, W) -> (S*B, 3, H, W)
        terms = critic_step(critic, optimizer, reals, s_logits, images, ctx)
        rows.append({"iter": iteration + 1, **terms})
    logger.info("fair judge: %d iterations on %d training images", iters, len(dataset))
    return JudgeTraining(critic=critic.eval(), history=pd.DataFrame(rows))

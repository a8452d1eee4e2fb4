"""What the paper-vs-code chapter shows: the ablation under the paper's and the authors' code's
settings, what the two presets change, and every departure of the authors' code with what the
runs measure about it (or "not measured here").

The measurements are contrasts of seed means (:func:`skdlib.analysis.report.measured`, on
:func:`skdlib.analysis.stats.contrast`); the settings are read from the runs' ``config.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import pandas as pd

from skdlib.analysis.report import experiment_cell, measured, setting_value, skipped_steps
from skdlib.analysis.runs import RunsTree

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = [
    "CODE_SIDE",
    "FIELDS",
    "PAPER_SIDE",
    "STEPS",
    "WANTED",
    "ablation_both",
    "departures",
    "preset_pair",
]

#: The ablation's steps, their runs under the paper's settings and under the authors' code's.
STEPS = ("+PI", "+PI+PA", "+PI+PA+HO")
PAPER_SIDE = ("pi", "pi_pa", "pi_pa_ho")
CODE_SIDE = ("official_pi", "official_pi_pa", "official_pi_pa_ho")
#: Every experiment the chapter reads.
WANTED = ("baseline", *PAPER_SIDE, *CODE_SIDE, "pi_pa_maxhalf")
#: The settings the two presets may differ in (dotted config fields).
FIELDS = (
    "distill.lambda_pi",
    "distill.lambda_pa",
    "distill.pool",
    "distill.node_size",
    "distill.node_fraction",
    "distill.detach_norm",
    "distill.gan_kind",
    "distill.gp_weight",
    "distill.disc_use_image",
    "distill.disc_input",
    "distill.disc_input_batchnorm",
    "distill.disc_loss_scale",
    "distill.disc_lr",
    "distill.disc_optimizer",
    "data.scale_range",
    "eval.mode",
    "eval.flip",
)


def ablation_both(table: pd.DataFrame) -> pd.DataFrame:
    """``setting`` and the mIoU (mean ± std over seeds, the finished count) of each ablation step
    under both presets (the baseline, which uses no distillation term, is shared)."""
    rows = [("baseline", experiment_cell(table, "baseline"), experiment_cell(table, "baseline"))]
    for step, paper, code in zip(STEPS, PAPER_SIDE, CODE_SIDE, strict=True):
        rows.append((step, experiment_cell(table, paper), experiment_cell(table, code)))
    columns = ["setting", "paper's settings: mIoU %", "authors' code's settings: mIoU %"]
    return pd.DataFrame(rows, columns=columns)


def preset_pair(
    configs: Mapping[str, ExperimentConfig | None],
) -> dict[str, ExperimentConfig] | None:
    """The configs of the last ablation step with a finished run under both presets, ``{paper
    run: config, code run: config}``; ``None`` when no pair has finished."""
    pairs = [
        (p, c) for p, c in zip(PAPER_SIDE, CODE_SIDE, strict=True) if configs[p] and configs[c]
    ]
    if not pairs:
        return None
    paper, code = pairs[-1]
    return {paper: configs[paper], code: configs[code]}


def _scale_row(table: pd.DataFrame, configs: Mapping[str, ExperimentConfig | None]) -> str:
    """The random-scale departure: measured by official_pi - pi where the two differ only in it."""
    scales = [setting_value(configs[name], "data.scale_range") for name in ("official_pi", "pi")]
    if scales[0] != scales[1]:
        head = (
            f"official_pi - pi, which differ only in the scale range ({scales[0]} vs {scales[1]}): "
        )
    else:
        head = (
            f"not measured at this profile: its recipe scales no scene at random ({scales[1]}, "
            "chosen on the teacher's and the baseline's curves) and its official runs keep the "
            "recipe (official_augment: [] in configs/experiments.yaml); official_pi and pi run "
            "the same computation here (the official settings act on PA and HO only), so the "
            "same numbers come out: "
        )
    return head + measured(table, ["official_pi"], ["pi"])


def departures(tree: RunsTree, table: pd.DataFrame) -> pd.DataFrame:
    """Every departure of the authors' code from the paper, and what these runs measure about
    it: ``departure in the authors' code, what these runs measure``."""
    configs = {name: tree.first_config(name) for name in WANTED}
    code_cfg = next((configs[name] for name in CODE_SIDE if configs[name]), None)
    node = setting_value(configs["pi"], "distill.node_size")
    skipped = skipped_steps(tree, ["pi_pa_ho", "official_pi_pa_ho"])
    skipped_text = "; ".join(f"{name}: {count}" for name, count in skipped.items())
    detach = (
        setting_value(code_cfg, "distill.detach_norm"),
        setting_value(configs["pi"], "distill.detach_norm"),
    )
    pa = measured(table, ["official_pi_pa", "pi"], ["official_pi", "pi_pa"])
    ho = measured(table, ["official_pi_pa_ho", "pi_pa"], ["official_pi_pa", "pi_pa_ho"])
    rows = [
        (
            "Pixel-wise reduction: master sums over the batch and divides by W'H' only (scales "
            "with the batch)",
            "not measured here: the library always averages over images (the paper's definition) "
            "under both presets",
        ),
        (
            "Pair-wise weight lambda_pa = 0.5 (paper: 10) with max pooling over half-map nodes "
            "(paper: beta x beta average)",
            "PA's gain under the code's settings minus under the paper's, (official_pi_pa - "
            "official_pi) - (pi_pa - pi), which also carries detach_norm (two rows down; the "
            f"scale range is the same within each side): {pa}",
        ),
        (
            f"  ... the node pooling alone (max over half the map vs {node} x {node} average), "
            "lambda_pa = 10 on both sides",
            "pi_pa_maxhalf - pi_pa: " + measured(table, ["pi_pa_maxhalf"], ["pi_pa"]),
        ),
        (
            "Pair-wise feature norms without gradient (official_code.yaml: detach_norm)",
            "measured only together with lambda_pa and the node pooling: the official_* runs set "
            f"detach_norm = {detach[0]}, the paper-side runs {detach[1]}, so its effect is part "
            "of the PA contrast two rows up; no pair of runs differs in detach_norm alone",
        ),
        (
            "Discriminator input: raw logits, no RGB image, batch-norm on the input; lambda2 also "
            "scales D's loss",
            "HO's gain under the code's settings minus under the paper's, (official_pi_pa_ho - "
            f"official_pi_pa) - (pi_pa_ho - pi_pa): {ho}",
        ),
        (
            "Discriminator layout: four 4x4 stride-2 spectral-norm convolutions plus an unpadded "
            "4x4 one",
            "not measured here: both presets use the library's critic (a padded 3x3 last "
            "convolution, so 16x16 maps fit)",
        ),
        (
            "WGAN-GP penalty with sqrt and no epsilon: NaN after a few thousand steps in master",
            "not reproduced: the library's penalty takes sqrt(sum g^2 + 1e-12), finite at zero "
            "gradients; skipped non-finite steps counted in the runs' metrics.jsonl: "
            + (skipped_text or "not measured in this tree"),
        ),
        (
            "GAN loss: hinge in the cvpr_19 branch",
            "not measured here (both presets use WGAN-GP, as master)",
        ),
        ("Random scale 0.7-2.1 (paper: 0.5-2.1)", _scale_row(table, configs)),
        ("No OHEM", "no difference here: neither preset uses OHEM"),
        (
            "ResNet18 student with a deep stem (three 3x3 convolutions; ImageNet weights do not "
            "load)",
            "not measured here: the book's ResNet18 has the torchvision stem under both presets",
        ),
        (
            "Evaluation: whole image, single scale, no flip; checkpoints chosen on val",
            "same evaluation under both presets (whole image, single scale); the book reports the "
            "last checkpoint, never a val-selected one",
        ),
    ]
    return pd.DataFrame(rows, columns=["departure in the authors' code", "what these runs measure"])

"""What the embedding-scores chapter (Fig. 3) shows: where the networks come from, the scores of
both judges as tables, histograms and a verdict, and one image with the three maps.

The scores come from :func:`skdlib.analysis.embedding.embedding_scores` (one row per validation
image, a column per network and ``diff/<student>`` = student minus teacher); the networks from
:func:`skdlib.analysis.embedding.load_fig3_models`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from skdlib.analysis.embedding import Fig3Models, JudgeTraining, predict_logits
from skdlib.analysis.report import difference, paired_difference

__all__ = [
    "judge_note",
    "median_image_figure",
    "score_histograms",
    "score_summary",
    "sources_table",
    "verdict",
]

#: The two students of Fig. 3 as :func:`~skdlib.analysis.embedding.load_fig3_models` names them.
WITHOUT, WITH = "w/o HO", "w/ HO"


def sources_table(fig3: Fig3Models) -> pd.DataFrame:
    """``what, from``: each network's run folder, the critic's input and widths, and the
    validation images the scores are taken on."""
    d = fig3.critic_config.distill
    critic_input = d.disc_input + (" + RGB image" if d.disc_use_image else "")
    if d.disc_input_batchnorm:
        critic_input += ", batch-norm on the input"
    rows = [
        *fig3.sources.items(),
        ("critic input", critic_input),
        ("critic widths", "-".join(map(str, d.disc_widths))),
        ("validation images", f"{len(fig3.val_set)} ({fig3.critic_config.data.name})"),
    ]
    return pd.DataFrame(rows, columns=["what", "from"])


def score_summary(scores: pd.DataFrame, students: Mapping[str, Any]) -> pd.DataFrame:
    """Per network (the teacher, then ``students``): the mean score, the mean and median
    difference to the teacher and on how many images the student scores above the teacher;
    four decimals."""
    rows = {"teacher": {"mean score": scores["teacher"].mean(), "mean difference": 0.0,
                        "median difference": 0.0, "images above the teacher": ""}}  # fmt: skip
    for name in students:
        diff = scores[f"diff/{name}"]
        rows[name] = {
            "mean score": scores[name].mean(),
            "mean difference": diff.mean(),
            "median difference": diff.median(),
            "images above the teacher": f"{int((diff > 0).sum())}/{len(scores)}",
        }
    return pd.DataFrame(rows).T.rename_axis("network")


def judge_note(judge: JudgeTraining, *, steps: int, images: int, batch_size: int) -> str:
    """One sentence on the fair judge's training: its steps and how far apart it scored the
    teacher's and the students' maps over its last quarter."""
    late = judge.history.tail(max(1, len(judge.history) // 4))
    gap = (late["score_teacher"] - late["score_student"]).mean()
    return (
        f"The judge took {steps} steps on {images} training images (batch {batch_size}); over "
        f"its last quarter it scored the teacher's maps {gap:+.4f} above the students' on average."
    )


def score_histograms(judges: Mapping[str, pd.DataFrame], fig3: Fig3Models) -> Any:
    """One panel per judge: the per-image differences student minus teacher of both students,
    each in its setting's colour, with zero marked. Returns the figure."""
    import matplotlib.pyplot as plt
    import numpy as np

    from skdlib.viz import setting_colour

    fig, axes = plt.subplots(1, len(judges), figsize=(5 * len(judges), 3.6), layout="constrained")
    for ax, (title, table) in zip(np.atleast_1d(axes), judges.items(), strict=True):
        values = [table[f"diff/{name}"] for name in fig3.students]
        bins = np.histogram_bin_edges(np.concatenate(values), bins=15)
        for name, diff in zip(fig3.students, values, strict=True):
            colour = setting_colour(fig3.settings.get(name, name))
            ax.hist(diff, bins=bins, histtype="step", linewidth=1.5, color=colour, label=name)
        ax.axvline(0, color="black", linewidth=1)
        ax.set_xlabel("score - teacher's score")
        ax.set_ylabel("images")
        ax.set_title(title)
        ax.legend(title="student", fontsize=8, title_fontsize=8)
    return fig


def verdict(judges: Mapping[str, pd.DataFrame], *, own: str, fair: str) -> str:
    """Per judge, the mean differences, on how many images the HO student is the closer one,
    and ``|diff without HO| - |diff with HO|`` against its per-image noise
    (:func:`~skdlib.analysis.report.paired_difference`); then one sentence reading the two
    judges together (Markdown). ``own``: the critic of the HO run, ``fair``: the fair judge."""
    lines, gaps = [], {}
    for title, table in judges.items():
        a, b = table[f"diff/{WITHOUT}"], table[f"diff/{WITH}"]
        gaps[title] = paired_difference(a.abs(), b.abs())
        lines += [
            f"**{title}**",
            "",
            f"- Mean difference to the teacher: {a.mean():+.4f} without HO, {b.mean():+.4f} with "
            f"HO (the teacher's own mean score is {table['teacher'].mean():+.4f}).",
            f"- On {int((a.abs() > b.abs()).sum())} of {len(table)} images the HO student's score "
            f"is closer to the teacher's than the other student's, on "
            f"{int((a.abs() < b.abs()).sum())} farther.",
            f"- |diff without HO| - |diff with HO|: "
            f"{difference(gaps[title], scale=1, unit='', digits=4)}.",
            "",
        ]
    lines.append(_reading(gaps[own], gaps[fair]))
    return "\n".join(lines)


def _reading(own: Mapping[str, Any], fair: Mapping[str, Any]) -> str:
    if own["exceeds"] and own["value"] > 0 and not (fair["exceeds"] and fair["value"] > 0):
        return (
            "The HO student looks more teacher-like only to the critic it was trained against: "
            "the fair judge does not confirm the separation."
        )
    if fair["exceeds"] and fair["value"] > 0:
        return (
            "The fair judge, which neither student met in training, also finds the HO student's "
            "maps closer to the teacher's: the direction of the paper's Fig. 3a."
        )
    if fair["exceeds"]:
        return (
            "The fair judge finds the HO student's maps *farther* from the teacher's than the "
            "other student's: the opposite of the paper's Fig. 3a."
        )
    return (
        "Neither judge separates the two students clearly beyond the per-image noise: these runs "
        "do not reproduce the separation of the paper's Fig. 3a."
    )


def median_image_figure(fig3: Fig3Models, scores: pd.DataFrame) -> Any:
    """The validation image whose HO student's score difference is the median one: the image,
    its ground truth, and the three networks' maps with their scores. Returns the figure."""
    import torch.nn.functional as F

    from skdlib.viz import class_legend, colorize, image_to_numpy, show_panels

    order = scores[f"diff/{WITH}"].sort_values(kind="stable")
    pick = int(scores.loc[order.index[len(order) // 2], "index"])
    item = fig3.val_set[pick]
    palette = fig3.val_set.palette
    logits = predict_logits({"teacher": fig3.teacher, **fig3.students}, item["image"])
    panels: list[tuple[str, Any] | None] = [
        (f"image {item.get('name', pick)}", image_to_numpy(item["image"])),
        ("ground truth", colorize(item["label"], palette)),
        None,  # the maps start a second row
    ]
    predictions = []
    size = tuple(item["image"].shape[-2:])
    for name, value in logits.items():
        full = F.interpolate(value[None], size=size, mode="bilinear", align_corners=False)
        predictions.append(full[0].argmax(dim=0))  # (1, K, H, W) -> (H, W)
        title = f"{name}: score {scores.loc[pick, name]:+.4f}"
        panels.append((title, colorize(predictions[-1], palette)))
    fig = show_panels(panels, ncols=3, width=3.0)
    class_legend(fig, fig3.val_set.class_names, palette, present=[item["label"], *predictions])
    return fig

"""The explorer chapter's figure and text for one answer of
:func:`skdlib.analysis.explorer.explore`.

:func:`explorer_figure` draws four rows of three columns (one network per column from the second
row): the image, its ground truth and the critic's scores; each network's prediction; each
network's affinity row of the chosen pixel's node; each student's per-pixel KL map.
:func:`pixel_report` says, for the chosen pixel, what each network predicts and how far each
student is from the teacher there. Networks keep their setting's colour
(:func:`skdlib.viz.setting_colour`) in the score bars.
"""

from __future__ import annotations

from typing import Any

from skdlib.analysis.explorer import TEACHER, ExplorerModels

__all__ = ["explorer_figure", "pixel_report"]


def _top_row(axes: Any, models: ExplorerModels, result: dict[str, Any], image: int) -> None:
    from skdlib.viz import colorize, setting_colour

    axes[0].imshow(result["image"])
    axes[0].set_title(f"image {image}", fontsize=9)
    axes[1].imshow(colorize(result["label"], models.palette))
    axes[1].set_title("ground truth", fontsize=9)
    if f"score/{TEACHER}" not in result:
        axes[2].axis("off")
        return
    names = models.names
    scores = [result[f"score/{name}"] for name in names]
    colours = [setting_colour(models.settings.get(name, name)) for name in names]
    axes[2].barh(range(len(scores)), scores, color=colours)
    axes[2].set_yticks(
        range(len(scores)), [f"{n}\n{v:.4f}" for n, v in zip(names, scores, strict=True)]
    )
    axes[2].tick_params(labelsize=8)
    axes[2].locator_params(axis="x", nbins=3)
    axes[2].axvline(0, color="k", linewidth=0.8)
    axes[2].invert_yaxis()
    axes[2].set_title("critic's score D(Q | I)", fontsize=9)


def explorer_figure(
    models: ExplorerModels, result: dict[str, Any], image: int, pixel: tuple[int, int]
) -> Any:
    """The explorer's figure for one image and pixel (``result`` from ``explore``); the pixel
    is marked with a white cross, its node with a red one. Returns the figure."""
    import matplotlib.pyplot as plt

    from skdlib.viz import class_legend, colorize

    row, col = pixel
    names, students = models.names, list(models.students)
    fig, axes = plt.subplots(4, 3, figsize=(10, 9.5), layout="constrained")
    _top_row(axes[0], models, result, image)
    for ax, name in zip(axes[1], names, strict=False):
        ax.imshow(colorize(result[f"prediction/{name}"], models.palette))
        ax.set_title(f"prediction, {name}", fontsize=9)
    for ax in [*axes[0, :2], *axes[1]]:
        ax.plot([col], [row], "w+", markersize=14, markeredgewidth=2)
    for ax, name in zip(axes[2], names, strict=False):  # cosine similarity in [-1, 1]
        shown = ax.imshow(result[f"affinity/{name}"], cmap="viridis", vmin=-1, vmax=1)
        node_row, node_col = result[f"node/{name}"]
        ax.plot([node_col], [node_row], "r+", markersize=12, markeredgewidth=2)
        mse = result.get(f"affinity_mse/{name}")
        extra = "" if mse is None else f"\nMSE to the teacher's {mse:.4f}"
        ax.set_title(f"affinity, {name}{extra}", fontsize=9)
    fig.colorbar(shown, ax=axes[2, len(names) - 1], shrink=0.8)
    kl_max = max(float(result[f"kl/{name}"].max()) for name in students)  # one scale for both
    for ax, name in zip(axes[3, 1:], students, strict=False):
        shown = ax.imshow(result[f"kl/{name}"], cmap="magma", vmin=0, vmax=kl_max)
        ax.set_title(f"KL(teacher || {name})\nmean {result[f'kl_mean/{name}']:.3f}", fontsize=9)
    fig.colorbar(shown, ax=axes[3, -1], shrink=0.8)
    for ax in axes.flat:
        if ax is not axes[0, 2]:
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.get_images():
                ax.axis("off")
    class_legend(fig, models.class_names, models.palette)
    return fig


def pixel_report(models: ExplorerModels, result: dict[str, Any], pixel: tuple[int, int]) -> str:
    """Lines for the chosen pixel: its ground truth, each network's most likely class and its
    probability, and each student's KL there (and over the image) and score minus the
    teacher's."""
    row, col = pixel
    classes = models.class_names
    truth = int(result["label"][row, col])
    named = classes[truth] if truth < len(classes) else "ignore"
    lines = [f"pixel ({row}, {col}), ground truth: {named}"]
    for name in models.names:
        probs = result[f"probabilities/{name}"]
        best = int(probs.argmax())
        line = f"  {name:16s} predicts {classes[best]:12s} (p = {probs[best]:.2f})"
        if name != TEACHER:
            here, mean = result[f"kl_at_pixel/{name}"], result[f"kl_mean/{name}"]
            line += f"   KL here {here:.3f}, mean {mean:.3f}"
            if f"score_gap/{name}" in result:
                line += f"   score - teacher's {result[f'score_gap/{name}']:+.3f}"
        lines.append(line)
    return "\n".join(lines)

"""Palettes and plots shared by the book's chapters (matplotlib is imported only when a plot is
made).

- Label maps: :func:`colorize`, :func:`class_legend`, :func:`show_panels`.
- Settings: :data:`SETTING_COLOURS` gives each experiment of the plan one colour in every chapter
  (:func:`setting_colour`, a stable colour for any other name); :func:`curves_plot` (validation
  mIoU over the iterations) and :func:`seed_scores_plot` (one point per seed) are the book's two
  plots of runs, with titled legends.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from skdlib.constants import IGNORE_INDEX

# Colours of the 19 Cityscapes training classes (official palette), used when a data set has none.
CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (102, 102, 156),
    (190, 153, 153),
    (153, 153, 153),
    (250, 170, 30),
    (220, 220, 0),
    (107, 142, 35),
    (152, 251, 152),
    (70, 130, 180),
    (220, 20, 60),
    (255, 0, 0),
    (0, 0, 142),
    (0, 0, 70),
    (0, 60, 100),
    (0, 80, 100),
    (0, 0, 230),
    (119, 11, 32),
)
IGNORE_COLOUR = (0, 0, 0)
_TITLE_INCHES = 0.5  # height of a panel's title above its image
_LEGEND_INCHES = 0.4  # room below the panels for a class_legend (trimmed when saved tight)


def default_palette(num_classes: int) -> list[tuple[int, int, int]]:
    """The Cityscapes palette, extended with deterministic colours past 19 classes."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    palette = list(CITYSCAPES_PALETTE[:num_classes])
    rng = np.random.default_rng(19)
    while len(palette) < num_classes:
        palette.append(tuple(int(v) for v in rng.integers(0, 256, size=3)))
    return palette


def colorize(
    labels: torch.Tensor | np.ndarray,
    palette: Sequence[tuple[int, int, int]] | None = None,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """A label map ``(H, W)`` as an RGB uint8 image ``(H, W, 3)``; ``ignore_index`` is black."""
    labels_np = (
        labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    )
    if labels_np.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels_np.shape}")
    valid = labels_np != ignore_index
    num_classes = int(labels_np[valid].max()) + 1 if valid.any() else 1
    table = np.array(
        list(palette) if palette is not None else default_palette(num_classes), dtype=np.uint8
    )
    if valid.any() and labels_np[valid].max() >= len(table):
        raise ValueError(
            f"label {int(labels_np[valid].max())} has no colour in a palette of {len(table)}"
        )
    out = np.zeros((*labels_np.shape, 3), dtype=np.uint8)  # (H, W, 3)
    out[valid] = table[labels_np[valid]]
    out[~valid] = IGNORE_COLOUR
    return out


def image_to_numpy(image: torch.Tensor) -> np.ndarray:
    """An image tensor ``(3, H, W)`` (or ``(1, 3, H, W)``) in [0, 1] as ``(H, W, 3)`` float for
    imshow."""
    if image.dim() == 4:
        if image.shape[0] != 1:
            raise ValueError(f"expected a single image, got batch shape {tuple(image.shape)}")
        image = image[0]
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W), got shape {tuple(image.shape)}")
    return image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()  # (H, W, 3)


def _class_names(classes: int | Sequence[str]) -> list[str]:
    return [f"class {k}" for k in range(classes)] if isinstance(classes, int) else list(classes)


def class_legend(
    fig: Any,
    classes: int | Sequence[str],
    palette: Sequence[tuple[int, int, int]] | None = None,
    *,
    present: Sequence[torch.Tensor | np.ndarray] | None = None,
    ncol: int = 8,
) -> Any:
    """A legend of class colours below a figure's panels; returns the matplotlib legend.

    ``classes`` are the class names (a data set's ``class_names``) or a class count (toy maps:
    "class 0", "class 1", ...); ``palette`` the colours the maps were drawn with by
    :func:`colorize` (``None``: :func:`default_palette`, as :func:`colorize` uses without one).
    With ``present`` (the label maps drawn), only the classes that occur in them are listed.
    The figure should use matplotlib's constrained layout (:func:`show_panels` does), which makes
    room for the legend.
    """
    import matplotlib.patches as mpatches

    names = _class_names(classes)
    colours = list(palette) if palette is not None else default_palette(len(names))
    if len(colours) < len(names):
        raise ValueError(f"palette has {len(colours)} colours for {len(names)} classes")
    shown = range(len(names))
    if present is not None:
        found: set[int] = set()
        for labels in present:
            array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else labels
            found.update(int(v) for v in np.unique(np.asarray(array)))
        shown = [k for k in shown if k in found]
    handles = [mpatches.Patch(color=np.asarray(colours[k]) / 255.0, label=names[k]) for k in shown]
    return fig.legend(
        handles=handles,
        loc="outside lower center",
        ncol=max(1, min(ncol, len(handles))),
        frameon=False,
        fontsize=9,
    )


def show_panels(
    panels: Sequence[tuple[str, Any] | None],
    *,
    ncols: int | None = None,
    cmap: str = "magma",
    width: float = 3.2,
    colorbar: bool = False,
) -> Any:
    """Plot panels in a grid of ``ncols`` columns (``None``: one row); each panel is
    ``(title, array)``: RGB ``(H, W, 3)`` or a scalar map ``(H, W)``, or ``None`` for an empty
    place (to start a new row). Each panel is ``width`` inches wide; rows are as high as the first
    panel's aspect needs, plus its title.

    The figure uses constrained layout, so a :func:`class_legend` added afterwards gets its room.
    Returns the matplotlib figure.
    """
    import matplotlib.pyplot as plt

    columns = len(panels) if ncols is None else max(1, min(ncols, len(panels)))
    rows = -(-len(panels) // columns)
    drawn = [panel for panel in panels if panel is not None]
    height, breadth = np.asarray(drawn[0][1]).shape[:2]
    row_height = width * height / breadth + _TITLE_INCHES  # the first panel's aspect, its title
    fig, axes = plt.subplots(
        rows,
        columns,
        figsize=(width * columns, row_height * rows + _LEGEND_INCHES),
        squeeze=False,
        layout="constrained",
    )
    for ax, panel in zip(axes.flat, panels, strict=False):
        if panel is None:
            continue
        title, data = panel
        array = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        im = ax.imshow(array, cmap=None if array.ndim == 3 else cmap)
        if colorbar and array.ndim == 2:
            fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(title, fontsize=10)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig


def show_row(
    panels: Sequence[tuple[str, Any]],
    *,
    cmap: str = "magma",
    width: float = 3.2,
    colorbar: bool = False,
) -> Any:
    """:func:`show_panels` in one row. Returns the matplotlib figure."""
    return show_panels(panels, cmap=cmap, width=width, colorbar=colorbar)


# --------------------------------------------------------------------------------------------------
# One colour per setting
# --------------------------------------------------------------------------------------------------
#: The colour of each experiment of the plan (and of the teacher) in every chapter: the paper's
#: ladder baseline -> +PI -> +PI+PA -> +PI+PA+HO in grey, blue, orange, green; the authors'-code
#: runs in the light tone of the same hue; lambda and pool variants in darker / lighter tones; the
#: convergence controls (``<name>_2x``, twice the iterations) in a dark tone of their setting's hue.
SETTING_COLOURS: Mapping[str, str] = {
    "teacher": "#000000",
    "baseline": "#7f7f7f",
    "pi": "#1f77b4",
    "pi_pa": "#ff7f0e",
    "pi_pa_ho": "#2ca02c",
    "official_pi": "#aec7e8",
    "official_pi_pa": "#ffbb78",
    "official_pi_pa_ho": "#98df8a",
    "pi_mimic": "#9467bd",
    "pi_at": "#8c564b",
    "pi_local": "#e377c2",
    "pi_pa_node1": "#bcbd22",
    "pi_pa_maxhalf": "#17becf",
    "pi_l1": "#08519c",
    "pi_l3": "#6baed6",
    "pi_pa_l1": "#a63603",
    "pi_pa_l3": "#fdae6b",
    "cwd": "#d62728",
    "dist": "#c5b0d5",
    "baseline_2x": "#3f3f3f",
    "pi_2x": "#08306b",
    "pi_pa_2x": "#7f2704",
    "pi_pa_ho_2x": "#00441b",
    "cwd_2x": "#a50f15",
    "dist_2x": "#54278f",
    "pi_unl0x": "#c6dbef",
    "pi_unl1x": "#9ecae1",
    "pi_unl1x_2x": "#4292c6",
    "pi_pa_ho_unl1x": "#a1d99b",
    "pi_pa_ho_unl1x_2x": "#41ab5d",
}
# The colours a name outside SETTING_COLOURS draws from (matplotlib's tab20).
_FALLBACK_COLOURS = (
    "#1f77b4", "#aec7e8", "#ff7f0e", "#ffbb78", "#2ca02c", "#98df8a", "#d62728", "#ff9896",
    "#9467bd", "#c5b0d5", "#8c564b", "#c49c94", "#e377c2", "#f7b6d2", "#7f7f7f", "#c7c7c7",
    "#bcbd22", "#dbdb8d", "#17becf", "#9edae5",
)  # fmt: skip
_SEED_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def setting_colour(name: str) -> str:
    """The colour of experiment ``name`` in every chapter: :data:`SETTING_COLOURS`, else a colour
    chosen by a hash of the name (the same in every process and on every machine)."""
    if name in SETTING_COLOURS:
        return SETTING_COLOURS[name]
    return _FALLBACK_COLOURS[zlib.crc32(name.encode("utf-8")) % len(_FALLBACK_COLOURS)]


def _axes(ax: Any, figsize: tuple[float, float]) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize, layout="constrained")


def _reference_lines(ax: Any, lines: Mapping[str, tuple[str, float]] | None) -> None:
    """Dashed horizontal lines: ``{experiment: (label, fraction)}``, in the setting's colour."""
    for name, (label, value) in (lines or {}).items():
        if value is not None and not np.isnan(value):
            colour = setting_colour(name)
            ax.axhline(100 * value, color=colour, linestyle="--", linewidth=1, label=label)


def curves_plot(
    curves: Any,
    *,
    lines: Mapping[str, tuple[str, float]] | None = None,
    ax: Any = None,
    xlabel: str = "iteration",
    title: str | None = None,
    legend_title: str = "setting",
) -> Any:
    """Validation mIoU (%) over the iterations, one line per setting in its colour.

    ``curves``: :func:`skdlib.analysis.stats.curve_summary`'s frame (``experiment, label, iter,
    mean, min, max``: the seed mean as a line, the range over seeds as a band), or one run's
    records (``iter, miou``, e.g. :func:`skdlib.analysis.runs.teacher_curve`, drawn as the
    teacher). ``lines``: reference levels ``{experiment: (label, fraction)}`` drawn dashed (the
    teacher's final score, ...). Values are fractions; the axis shows percent. Returns the figure.
    """
    if "mean" not in curves.columns:
        values = curves["miou"]
        curves = curves.assign(mean=values, min=values, max=values)
    if "experiment" not in curves.columns:
        curves = curves.assign(experiment="teacher", label="teacher")
    fig, ax = _axes(ax, (6.5, 3.8))
    for name, mine in curves.groupby("experiment", sort=False):
        colour = setting_colour(str(name))
        label = str(mine["label"].iloc[0])
        ax.plot(mine["iter"], 100 * mine["mean"], marker="o", color=colour, label=label)
        if (mine["max"] > mine["min"]).any():
            ax.fill_between(
                mine["iter"], 100 * mine["min"], 100 * mine["max"], color=colour, alpha=0.2
            )
    _reference_lines(ax, lines)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val mIoU (%)")
    if title:
        ax.set_title(title)
    ax.legend(title=legend_title, fontsize=8, title_fontsize=8)
    ax.grid(alpha=0.3)
    return fig


def seed_scores_plot(
    runs: Any,
    order: Sequence[str],
    *,
    lines: Mapping[str, tuple[str, float]] | None = None,
    ax: Any = None,
) -> Any:
    """Final val mIoU (%) of every finished run: one column per experiment of ``order`` (named by
    its label), one point per seed in the setting's colour (the marker says which seed), and the
    seed mean as a black bar; ``lines`` as in :func:`curves_plot`.

    ``runs``: :func:`skdlib.analysis.runs.collect_runs`'s frame (``experiment, label, seed,
    status, miou``). Returns the figure.
    """
    from matplotlib.lines import Line2D

    done = runs[(runs["status"] == "finished") & runs["experiment"].isin(list(order))]
    seeds = sorted(int(s) for s in done["seed"].unique())
    fig, ax = _axes(ax, (7.5, 3.6))
    labels = []
    for x, name in enumerate(order):
        mine = done[done["experiment"] == name]
        labels.append(str(mine["label"].iloc[0]) if len(mine) else name)
        for row in mine.itertuples():
            marker = _SEED_MARKERS[seeds.index(int(row.seed)) % len(_SEED_MARKERS)]
            offset = 0.08 * (seeds.index(int(row.seed)) - (len(seeds) - 1) / 2)
            ax.scatter(x + offset, 100 * row.miou, color=setting_colour(name), marker=marker,
                       s=36, edgecolor="black", linewidth=0.4, zorder=3)  # fmt: skip
        if len(mine):
            ax.hlines(100 * mine["miou"].mean(), x - 0.3, x + 0.3, color="black", zorder=4)
    _reference_lines(ax, lines)
    handles = [
        Line2D([], [], linestyle="", marker=_SEED_MARKERS[i % len(_SEED_MARKERS)],
               color="0.6", markeredgecolor="black", label=str(seed))
        for i, seed in enumerate(seeds)
    ]  # fmt: skip
    handles.append(Line2D([], [], color="black", label="seed mean"))
    handles += [h for h in ax.get_legend_handles_labels()[0] if isinstance(h, Line2D)]
    ax.legend(handles=handles, title="seed", fontsize=8, title_fontsize=8, ncol=2)
    ax.set_xticks(range(len(order)), labels, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("val mIoU (%)")
    ax.grid(alpha=0.3, axis="y")
    return fig

"""Palettes and plots shared by the book's chapters (matplotlib is imported only when a plot is
made)."""

from __future__ import annotations

from collections.abc import Sequence
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

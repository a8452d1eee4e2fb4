"""skdlib.viz: the class legend and the panel grid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from skdlib.viz import class_legend, colorize, default_palette, show_panels, show_row


def _entries(legend) -> list[tuple[str, tuple[float, ...]]]:
    return [
        (text.get_text(), tuple(round(v, 4) for v in handle.get_facecolor()[:3]))
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    ]


def test_class_legend_names_every_class_in_the_maps_colours() -> None:
    fig = plt.figure()
    palette = [(255, 0, 0), (0, 0, 255)]
    legend = class_legend(fig, ["road", "car"], palette)
    assert _entries(legend) == [("road", (1.0, 0.0, 0.0)), ("car", (0.0, 0.0, 1.0))]
    plt.close(fig)


def test_class_legend_lists_present_classes_with_colorizes_default_palette() -> None:
    labels = torch.tensor([[0, 2], [2, 255]])
    fig = plt.figure()
    legend = class_legend(fig, 3, present=[labels])
    colour = default_palette(3)[2]
    assert [name for name, _ in _entries(legend)] == ["class 0", "class 2"]
    assert _entries(legend)[1][1] == tuple(round(c / 255, 4) for c in colour)
    # the same colour colorize draws for class 2 without a palette
    assert tuple(colorize(labels)[0, 1]) == colour
    plt.close(fig)


def test_class_legend_refuses_a_short_palette() -> None:
    fig = plt.figure()
    with pytest.raises(ValueError, match="palette has 1 colours for 2 classes"):
        class_legend(fig, ["a", "b"], [(0, 0, 0)])
    plt.close(fig)


def test_show_panels_grid_and_row() -> None:
    panels = [(f"p{k}", np.zeros((4, 6))) for k in range(5)]
    fig = show_panels(panels, ncols=2)
    assert len(fig.axes) == 6  # 3 rows x 2 columns, the last one empty
    assert [ax.get_title() for ax in fig.axes[:5]] == [f"p{k}" for k in range(5)]
    # 3.2 inches wide, 3.2 * 4 / 6 high plus 0.5 for the title, per panel; 0.4 for a legend
    assert tuple(fig.get_size_inches()) == pytest.approx((6.4, 3 * (3.2 * 4 / 6 + 0.5) + 0.4))
    plt.close(fig)
    fig = show_panels([panels[0], None, panels[1]], ncols=2)
    assert [ax.get_title() for ax in fig.axes] == ["p0", "", "p1", ""]
    plt.close(fig)
    fig = show_row(panels[:3])
    assert len(fig.axes) == 3
    assert tuple(fig.get_size_inches()) == pytest.approx((9.6, 3.2 * 4 / 6 + 0.5 + 0.4))
    plt.close(fig)

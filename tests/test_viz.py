"""skdlib.viz: the class legend and the panel grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from skdlib.viz import (
    SETTING_COLOURS,
    class_legend,
    colorize,
    curves_plot,
    default_palette,
    seed_scores_plot,
    setting_colour,
    show_panels,
    show_row,
)


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


def test_every_setting_of_the_plan_has_its_own_colour() -> None:
    import yaml

    plan = yaml.safe_load(
        (Path(__file__).resolve().parents[1] / "configs/experiments.yaml").read_text()
    )
    names = [e["name"] for e in plan["experiments"]]
    assert set(names) <= set(SETTING_COLOURS)
    colours = [setting_colour(n) for n in [*names, "teacher"]]
    assert len(set(colours)) == len(colours)  # no two settings share a colour
    # Another name: a fixed colour from the fallback list, the same every time.
    assert setting_colour("my_new_setting") == setting_colour("my_new_setting")
    assert setting_colour("my_new_setting").startswith("#")


def test_curves_and_seed_scores_plots_use_the_palette_and_titled_legends() -> None:
    curves = pd.DataFrame(
        {
            "experiment": ["pi", "pi", "baseline", "baseline"],
            "label": ["+PI", "+PI", "baseline", "baseline"],
            "iter": [5, 10, 5, 10],
            "mean": [0.3, 0.5, 0.2, 0.4],
            "min": [0.25, 0.45, 0.2, 0.4],
            "max": [0.35, 0.55, 0.2, 0.4],
        }
    )
    fig = curves_plot(curves, lines={"teacher": ("teacher (final)", 0.7)})
    ax = fig.axes[0]
    assert ax.get_legend().get_title().get_text() == "setting"
    assert [line.get_color() for line in ax.get_lines()[:2]] == ["#1f77b4", "#7f7f7f"]
    assert ax.get_lines()[0].get_ydata().tolist() == pytest.approx([30, 50])
    assert ax.get_ylabel() == "val mIoU (%)"
    plt.close(fig)
    fig = curves_plot(
        pd.DataFrame({"iter": [1, 2], "miou": [0.1, 0.2]}), xlabel="teacher iteration"
    )
    assert fig.axes[0].get_lines()[0].get_color() == SETTING_COLOURS["teacher"]
    plt.close(fig)
    runs = pd.DataFrame(
        {
            "experiment": ["pi", "pi", "baseline", "baseline"],
            "label": ["+PI", "+PI", "baseline", "baseline"],
            "seed": [0, 1, 0, 1],
            "status": ["finished", "finished", "finished", "failed"],
            "miou": [0.5, 0.6, 0.4, float("nan")],
        }
    )
    fig = seed_scores_plot(runs, ["baseline", "pi"], lines={"teacher": ("teacher", 0.7)})
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "seed"
    assert [t.get_text() for t in legend.get_texts()] == ["0", "1", "seed mean", "teacher"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["baseline", "+PI"]
    plt.close(fig)

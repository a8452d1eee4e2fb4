"""What the training chapter shows of a run folder: its loss terms and validation curve, and its
summary as tables a reader can read (rounded numbers, named quantities); and the networks a
profile trains, with their cost (the efficiency chapter)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.train.runfolder import RunFolder

if TYPE_CHECKING:
    from skdlib.analysis.datasets import ProfileData

__all__ = ["loss_terms", "run_figure", "run_tables", "trained_networks"]

#: Record keys that are not loss terms.
_NOT_TERMS = {"iter", "lr", "time", "sec_per_iter", "nonfinite", "split"}


def loss_terms(folder: RunFolder) -> pd.DataFrame:
    """The training records of a run (not the validation ones) as a frame: ``iter`` and one
    column per logged loss term (``task``, ``pixel``, ``critic``, ...), in the order first met."""
    records = [r for r in folder.read_metrics() if r.get("split") != "val"]
    terms: list[str] = []
    for record in records:
        for key, value in record.items():
            numeric = isinstance(value, int | float) and not isinstance(value, bool)
            new = key not in _NOT_TERMS and not key.startswith("skipped") and key not in terms
            if new and numeric:
                terms.append(key)
    rows = [{"iter": r["iter"], **{t: r.get(t, math.nan) for t in terms}} for r in records]
    return pd.DataFrame(rows, columns=["iter", *terms])


def run_figure(folder: RunFolder, *, name: str, title: str) -> Any:
    """Two panels: the run's loss terms over the iterations, and its validation mIoU
    (:func:`skdlib.viz.curves_plot`, in the colour of setting ``name``). Returns the figure."""
    import matplotlib.pyplot as plt

    from skdlib.viz import curves_plot

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    terms = loss_terms(folder)
    for term in terms.columns[1:]:
        left.plot(terms["iter"], terms[term], marker=".", label=term)
    left.set_xlabel("iteration")
    left.set_ylabel("loss term")
    left.set_title(f"{title}: loss terms")
    if len(terms.columns) > 1:
        left.legend(title="term", fontsize=8, title_fontsize=8, ncol=2)
    val = [r for r in folder.read_metrics() if r.get("split") == "val"]
    curve = pd.DataFrame(val, columns=["iter", "miou"]).assign(experiment=name, label=name)
    curves_plot(curve, ax=right, title="validation", legend_title="run")
    return fig


def _duration(seconds: float) -> str:
    """``"5 m 34 s"`` (``"12.3 s"`` under a minute)."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} m {rest:02d} s"


def run_tables(folder: RunFolder, *, name: str, where: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A finished run's summary as two tables: ``quantity, value`` (the run ``name``, its folder
    ``where`` as the reader should see it, scores in percent, iterations, wall time, parameters
    and FLOPs of one image at the crop size, config hash) and ``class, IoU (%)``.

    Raises:
        ValueError: the folder holds no finished run.
    """
    summary = folder.read_summary()
    if summary is None or not summary.get("finished"):
        raise ValueError(f"{where}: no finished run (summary.json missing or not finished)")
    quantities = [
        ("run", name),
        ("folder", where),
        ("val mIoU", f"{100 * summary['miou']:.2f} %"),
        ("pixel accuracy", f"{100 * summary['pixel_acc']:.2f} %"),
        ("iterations", f"{summary['iterations']:,}"),
        ("wall time", _duration(float(summary["wall_time_s"]))),
        ("parameters", f"{summary['params'] / 1e6:.3f} M"),
        ("GFLOPs, one image at the crop size", f"{summary['flops'] / 1e9:.3f}"),
        ("config hash", str(summary["config_hash"])),
    ]
    classes = pd.DataFrame(
        {
            "class": summary["class_names"],
            "IoU (%)": ["n/a" if v is None else f"{100 * v:.1f}" for v in summary["class_iou"]],
        }
    )
    return pd.DataFrame(quantities, columns=["quantity", "value"]), classes


def trained_networks(data: ProfileData) -> pd.DataFrame:
    """The networks a profile's runs train, from its configurations: the teacher and the
    students, each with its parameters (inference modules) and multiply-adds of one forward pass
    at the data's image size (:func:`skdlib.models.complexity`, counted on the ``meta`` device).

    Columns: ``role``, ``network`` (``"pspnet_resnet18 width 0.25"``), ``params (M)``,
    ``GMACs @HxW``, ``classes``.
    """
    import torch

    from skdlib.data.generate import CLASS_NAMES
    from skdlib.models import complexity
    from skdlib.train.build import build_network

    rows = []
    for role, cfg in (("teacher", data.teacher), ("students", data.student)):
        options = dict(cfg.data.options or {})
        size = (int(options.get("height", 64)), int(options.get("width", 128)))
        classes = cfg.model.num_classes or (len(CLASS_NAMES) if cfg.data.name == "embedded" else 19)
        model_options = dict(cfg.model.student_options)
        with torch.device("meta"):  # shapes only
            model = build_network(cfg, classes, role="student")  # the network the run trains
        counted = complexity(model, size)
        rows.append(
            {
                "role": role,
                "network": f"{cfg.model.student} width {model_options.get('width', 1.0):g}",
                "params (M)": round(counted.params / 1e6, 3),
                f"GMACs @{size[0]}x{size[1]}": round(counted.macs / 1e9, 4),
                "classes": classes,
            }
        )
    return pd.DataFrame(rows)

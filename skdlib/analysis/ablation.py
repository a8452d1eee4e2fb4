"""What the ablation chapter computes: the regime search, the paper's setup beside ours, the
steps of the ablation with p-values, the convergence controls, the λ1 sensitivity and the reading.

Every table reads the per-run frame of :func:`skdlib.analysis.runs.collect_runs` (or the records of
:func:`skdlib.analysis.regimes.read_search`); the tests are :mod:`skdlib.analysis.verdicts`'
(two-sided Welch's t, ``p < 0.05`` called larger than seed noise; "±" one sample standard deviation
across seeds). The paper's numbers are the only values typed in (Liu et al., CVPR 2019, Table 1
and Section 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from skdlib.analysis.regimes import regime_table
from skdlib.analysis.verdicts import (
    TWICE_SUFFIX,
    compare,
    comparison_table,
    convergence_table,
    label_of,
    seed_scores,
    verdict_with_control,
)

if TYPE_CHECKING:
    from skdlib.train.config import ExperimentConfig

__all__ = [
    "ABLATION",
    "LAMBDA_SETTINGS",
    "PAPER_MIOU",
    "PAPER_SETUP",
    "STEPS",
    "chosen_regime",
    "convergence_view",
    "lambda_table",
    "present",
    "reading",
    "regime_view",
    "steps_table",
]

#: The ablation's settings, in the paper's order.
ABLATION = ("baseline", "pi", "pi_pa", "pi_pa_ho")
#: The paper's Table 1 (Cityscapes val mIoU %, ResNet18 student, PSPNet-ResNet101 teacher).
PAPER_MIOU = {"baseline": 69.10, "pi": 70.51, "pi_pa": 71.78, "pi_pa_ho": 74.08, "teacher": 78.56}
#: The paper's setup beside why the quick profile differs (smoke only shrinks further).
PAPER_SETUP = {
    "teacher": (
        "PSPNet-ResNet101",
        "a ResNet101 cannot be trained at this budget on a CPU: a quarter-width ResNet18, four "
        "times the students' width, stronger by capacity",
    ),
    "teacher data": (
        "Cityscapes train (2975)",
        "the students' own labelled scenes, as in the paper",
    ),
    "teacher iterations": ("(trained separately)", "to its plateau; kept in the repository"),
    "student": (
        "PSPNet-ResNet18 width 1.0, ImageNet init",
        "a sixteenth-width ResNet18 (no downloads: its backbone pretrained on a coarse 3-class "
        "task of other scenes)",
    ),
    "data": ("Cityscapes, 2975 train / 500 val", "generated scenes (nothing can be downloaded)"),
    "crop": ("512 x 512", "the whole 64 x 128 scene"),
    "random scale": ("0.5-2.1", "flips only: the fixed teacher's outputs are stored once"),
    "batch": ("8", ""),
    "optimiser": (
        "SGD momentum 0.9, lr 0.01 (poly), weight decay 5e-4",
        "AdamW (poly): SGD needed tens of thousands of iterations here",
    ),
    "student iterations": ("40000", "where twice as many move the baseline's mean < 0.5 point"),
    "discriminator widths": ("64-128-256-512", "keeps the critic cheaper than the student"),
    "node size beta": ("2 x 2 (extended paper)", ""),
    "lambda1 (PI, PA) / lambda2 (HO)": ("10, 10 / 0.1", ""),
}
#: Each step of the ablation as ``(reference, setting)``: what a term adds to the one before it.
STEPS = (
    ("baseline", "pi"),
    ("pi", "pi_pa"),
    ("pi_pa", "pi_pa_ho"),
    ("baseline", "pi_pa"),
    ("baseline", "pi_pa_ho"),
)
#: The λ1 sensitivity: terms -> {λ1: experiment}; λ1 = 10 is the ablation's own run.
LAMBDA_SETTINGS = {
    "+PI": {1: "pi_l1", 3: "pi_l3", 10: "pi"},
    "+PI+PA": {1: "pi_pa_l1", 3: "pi_pa_l3", 10: "pi_pa"},
}


def present(runs: pd.DataFrame, names: Sequence[str]) -> list[str]:
    """The ``names`` with at least one finished run in ``runs``, in the given order."""
    return [n for n in names if len(seed_scores(runs, n))]


def chosen_regime(cfg: ExperimentConfig) -> dict[str, Any]:
    """The regime-table key of a baseline run's configuration: student width, initialisation,
    labelled scenes, AdamW lr and iterations (as :func:`skdlib.analysis.regimes.read_search`
    reads a record)."""
    options = dict(cfg.data.options or {})
    return {
        "width": float((cfg.model.student_options or {}).get("width", 1.0)),
        "init": "pretrained" if cfg.model.student_pretrained else "random",
        "scenes": int(cfg.data.train_limit or options.get("num_train", 0)),
        "lr": float(cfg.train.lr),
        "iters": int(cfg.train.max_iters),
    }


def regime_view(records: pd.DataFrame, chosen: Mapping[str, Any] | None) -> pd.DataFrame:
    """:func:`~skdlib.analysis.regimes.regime_table` for reading: scores as text to 0.01 point,
    ``converged`` and ``chosen`` as yes/no and "<- the book's recipe", the student as its width
    (``"student width"``)."""
    table = regime_table(records, chosen=chosen)
    if not len(table):
        return table
    for column in ("at T", "at 2T", "change", "teacher (same scenes)", "gap"):
        table[column] = [("n/a" if math.isnan(v) else f"{v:.2f}") for v in table[column]]
    table["AdamW lr"] = [f"{v:g}" for v in table["AdamW lr"]]
    table["converged"] = table["converged"].map({True: "yes", False: "no"})
    # The student's width only (a narrow table): every regime tried a PSPNet-ResNet18.
    table["student"] = [name.rsplit(" x", 1)[-1] for name in table["student"]]
    table["chosen"] = table["chosen"].map({True: "<- the book's recipe", False: ""})
    return table.rename(
        columns={"student": "student width", "at T": "baseline at T", "at 2T": "baseline at 2T"}
    )


def steps_table(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`~skdlib.analysis.verdicts.comparison_table` of the :data:`STEPS` whose both sides
    finished a seed."""
    pairs = [(a, b) for a, b in STEPS if len(present(runs, (a, b))) == 2]
    return comparison_table(runs, pairs)


def convergence_view(runs: pd.DataFrame) -> pd.DataFrame:
    """:func:`~skdlib.analysis.verdicts.convergence_table` of every setting with a finished
    ``<name>_2x`` control, the baseline first."""
    names = sorted(set(runs["experiment"]) if len(runs) else set(), key=_baseline_first)
    pairs = [
        (n, n + TWICE_SUFFIX)
        for n in names
        if not n.endswith(TWICE_SUFFIX) and present(runs, [n + TWICE_SUFFIX])
    ]
    table = convergence_table(runs, [p for p in pairs if present(runs, p[:1])])
    if len(table):
        table["converged"] = table["converged"].map({True: "yes", False: "no"})
    return table


def _baseline_first(name: str) -> tuple[bool, str]:
    return name != "baseline", name


def lambda_table(runs: pd.DataFrame, reference: str = "baseline") -> pd.DataFrame:
    """One row per terms and λ1 of :data:`LAMBDA_SETTINGS` with a finished seed: seeds, mIoU
    ``mean ± sd`` and the Welch comparison with ``reference`` (difference, p, verdict)."""
    pairs, rows = [], []
    for terms, by_lambda in LAMBDA_SETTINGS.items():
        for value, name in by_lambda.items():
            if present(runs, [name]) and present(runs, [reference]):
                pairs.append((reference, name))
                rows.append({"terms": terms, "λ1": value})
    if not rows:
        return pd.DataFrame()
    tests = comparison_table(runs, pairs)
    keep = ["seeds", "setting mIoU", "difference", "p (two-sided)", "verdict"]
    out = pd.concat([pd.DataFrame(rows), tests[keep].reset_index(drop=True)], axis=1)
    return out.rename(
        columns={"setting mIoU": "mIoU", "difference": f"vs {label_of(runs, reference)}"}
    )


def reading(runs: pd.DataFrame, teacher_miou: float) -> list[str]:
    """Markdown bullets answering the ablation's questions from the runs: each term over the
    setting before it (with its convergence control where one was run), the best λ1, and the
    teacher's lead over the baseline. Questions whose runs are missing are left out."""
    questions = {
        ("baseline", "pi"): "Does the pixel-wise term help",
        ("pi", "pi_pa"): "Does the pair-wise term add to it",
        ("pi_pa", "pi_pa_ho"): "Does the holistic term add to both",
    }
    lines = [
        "- " + verdict_with_control(runs, a, b, question=q)
        for (a, b), q in questions.items()
        if len(present(runs, (a, b))) == 2
    ]
    best = _best_lambda(runs)
    if best:
        lines.append("- " + best)
    base = seed_scores(runs, "baseline")
    if len(base) and not math.isnan(teacher_miou):
        gap = 100 * teacher_miou - float(base.mean())
        lines.append(
            f"- The teacher scores {100 * teacher_miou:.2f}, {gap:.2f} points above the "
            f"baseline's seed mean ({float(base.mean()):.2f}) on the same validation scenes."
        )
    return lines


def _best_lambda(runs: pd.DataFrame) -> str:
    """``"Which λ1: ..."``: per terms run at two λ1 or more, the λ1 with the highest seed mean
    and its test against the baseline."""
    parts = []
    for terms, by_lambda in LAMBDA_SETTINGS.items():
        means = {v: float(seed_scores(runs, n).mean()) for v, n in by_lambda.items()
                 if len(seed_scores(runs, n))}  # fmt: skip
        if len(means) < 2 or not present(runs, ["baseline"]):  # no sensitivity run: no choice
            continue
        value = max(means, key=means.__getitem__)
        test = compare(runs, "baseline", by_lambda[value]).test
        verdict = "" if test.untestable else f": {test.verdict}"
        parts.append(
            f"{terms} at λ1 = {value} ({means[value]:.2f}; against the baseline "
            f"{test.describe()}{verdict})"
        )
    return ("Which λ1: the best mean of each term is " + "; ".join(parts) + ".") if parts else ""

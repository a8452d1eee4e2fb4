"""Measurements the book's chapters compute (import the submodule you need; no work at import time).

- :mod:`skdlib.analysis.toy`: small synthetic label maps, logits, features and images for the loss
  chapters.
- :mod:`skdlib.analysis.context`: per-pixel classifier against a small network with context
  (does a data set need context?).
- :mod:`skdlib.analysis.runs`: :class:`~skdlib.analysis.runs.RunsTree`, the one reader of a
  profile's runs tree (its index, teachers, run folders, data sets and networks), and its tables
  (runs, seed means and spreads, validation curves).
- :mod:`skdlib.analysis.stats`: the seed-noise test, contrasts, curve bands, the plateau rule.
- :mod:`skdlib.analysis.demo`: a tiny runs tree trained on the spot (tests, chapters without
  runs).
- :mod:`skdlib.analysis.report`: what the result chapters print: scores in mIoU points, differences
  against the seed noise as sentences, tables of experiments and of their settings, a run's config.
- :mod:`skdlib.analysis.benchmarks`: the benchmarks' JSON results laid out for the performance
  appendix.
- :mod:`skdlib.analysis.embedding`: the critic's embedding scores of teacher and student maps
  (Fig. 3).
- :mod:`skdlib.analysis.explorer`: everything the interactive explorer shows for one image and
  pixel.
- :mod:`skdlib.analysis.unlabeled`: the unlabeled-images experiment (terms, labelled and unlabeled
  image counts and iterations per experiment, the chapter's questions as pairs, its reading).
- :mod:`skdlib.analysis.fit`: how finished networks fit the students' labelled scenes.
- :mod:`skdlib.analysis.findings`: the book's findings in a few lines (the introduction).
- :mod:`skdlib.analysis.significance`: two-sided Welch's t-tests of seed means and contrasts, the
  book's one rule for "larger than seed noise".
- :mod:`skdlib.analysis.verdicts`: comparisons of settings with p-values, the convergence
  controls' table, and the verdicts in words the result chapters print.
- :mod:`skdlib.analysis.regimes`: the search for a profile's recipe, read back from its record
  folders.
- :mod:`skdlib.analysis.training`: the training chapter's loss terms, validation panels and
  summary tables, and the networks a profile trains (the efficiency chapter).
- :mod:`skdlib.analysis.datasets`: the data sets a profile's runs use, their class shares, the
  pixel-vs-context probe as a table (the data chapter).
- :mod:`skdlib.analysis.fig3`: Fig. 3's tables, histograms, verdict and median image.
- :mod:`skdlib.analysis.paper_vs_code`: the paper-vs-code chapter's tables.
- :mod:`skdlib.analysis.explorer_figure`: the explorer chapter's figure for one answer.
- :mod:`skdlib.analysis.own_network`: the chapter "Distill your own network" (the profile's
  teacher, its overrides, the curves of a few runs).
- :mod:`skdlib.analysis.released`: the networks of the released weights (the authors', CIRKD's),
  their parameters and multiply-adds beside the paper's.
"""

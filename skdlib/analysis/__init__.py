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
  image counts per experiment).
- :mod:`skdlib.analysis.fit`: how finished networks fit the students' labelled scenes.
- :mod:`skdlib.analysis.findings`: the book's findings in a few lines (the introduction).
"""

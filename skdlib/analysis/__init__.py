"""Measurements the book's chapters compute (import the submodule you need; no work at import time).

- :mod:`skdlib.analysis.toy`: small synthetic label maps, logits, features and images for the loss
  chapters.
- :mod:`skdlib.analysis.context`: per-pixel classifier against a small network with context
  (does a data set need context?).
- :mod:`skdlib.analysis.runs`: reading a profile's run folders (``index.json``, summaries, metrics),
  mean and spread over seeds, the seed-noise test.
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
- :mod:`skdlib.analysis.released`: the networks of the released weights (the authors', CIRKD's),
  their parameters and multiply-adds beside the paper's.
"""

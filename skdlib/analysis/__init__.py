"""Measurements the book's chapters compute (import the submodule you need; no work at import time).

- :mod:`skdlib.analysis.context`: per-pixel classifier against a small network with context
  (does a data set need context?).
"""

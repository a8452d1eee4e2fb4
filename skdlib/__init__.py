"""skdlib: structured knowledge distillation for semantic segmentation.

Subpackages, bottom to top (arrows point down only: ``losses``, ``models``, ``data`` at the
bottom; then ``train``; then ``evaluate`` and ``experiments``; then ``analysis``; nothing here
imports the book, the benchmarks or the tests):

- ``skdlib.losses``: the distillation terms as pure functions (pixel-wise, pair-wise, holistic,
  the pair-wise variants, later methods CWD and DIST, the task loss).
- ``skdlib.models``: teacher and student networks with named outputs, the discriminator,
  weight loading, complexity (parameters, FLOPs) and ONNX export.
- ``skdlib.data``: the embedded generated data set, real data-set loaders, transforms.
- ``skdlib.train``: configuration, factories (``build``), the registry of distillation terms,
  the two-step distillation step, the training loop (``python -m skdlib.train``), run folders.
- ``skdlib.metrics`` and ``skdlib.evaluate``: confusion matrix and scores; whole-image and
  sliding-window evaluation (``python -m skdlib.evaluate``).
- ``skdlib.experiments``: the experiment pipeline (plan, runs, executors, index;
  ``python -m skdlib.experiments``); the plan names the training notebook, the code never does.
- ``skdlib.analysis``: what the book's chapters compute (toy inputs, probes, run tables,
  chapter helpers).
- ``skdlib.viz``: palettes and plots shared by the chapters.

Import what you need from the subpackage; importing ``skdlib`` itself does no work.
"""

__version__ = "0.1.0"

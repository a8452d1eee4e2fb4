"""skdlib: structured knowledge distillation for semantic segmentation.

Subpackages (arrows point down only; nothing here imports the book, the benchmarks or the tests):

- ``skdlib.losses``: the distillation terms as pure functions (pixel-wise, pair-wise, holistic,
  the pair-wise variants, the task loss).
- ``skdlib.models``: teacher and student networks with named outputs, the discriminator,
  weight loading, complexity (parameters, FLOPs) and ONNX export.
- ``skdlib.data``: the embedded generated data set, real data-set loaders, transforms.
- ``skdlib.train``: configuration, the distillation step, the training loop
  (``python -m skdlib.train``).
- ``skdlib.metrics`` and ``skdlib.evaluate``: confusion matrix and scores; whole-image and
  sliding-window evaluation (``python -m skdlib.evaluate``).
- ``skdlib.analysis``: what the book's chapters compute (toy inputs, probes, run tables).
- ``skdlib.viz``: palettes and plots shared by the chapters.

Import what you need from the subpackage; importing ``skdlib`` itself does no work.
"""

__version__ = "0.1.0"

"""Training: configuration, the distillation step, the loop, run folders, distributed helpers.

- :mod:`skdlib.train.config`: frozen experiment configuration from YAML presets with overrides.
- :mod:`skdlib.train.step`: one iteration (student step with the critic fixed, critic step with the
  student fixed), returning a dict of every loss term.
- :mod:`skdlib.train.loop`: ``train(cfg, run_dir, *, resume, force)``; ``python -m skdlib.train``.
- :mod:`skdlib.train.runfolder`: atomic files, checkpoints (read with ``weights_only=True``),
  env.json.
- :mod:`skdlib.train.distributed`: process groups under torchrun, synchronised batch-norm on CPU.

Importing this package does no work; import the submodules you need.
"""

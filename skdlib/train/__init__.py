"""Training: configuration, factories, the term registry, the step, the loop, run folders.

Arrows point down this list:

- :mod:`skdlib.train.config`: frozen experiment configuration from YAML presets with overrides.
- :mod:`skdlib.train.runfolder`: a run folder's files (atomic writes, checkpoints read with
  ``weights_only=True``, ``env.json``) and their readers.
- :mod:`skdlib.train.terms`: the registry of distillation terms (name, switch, weight, inputs,
  function), from which the objective and the config's checks follow.
- :mod:`skdlib.train.build`: every config -> object factory (device, data sets, loaders,
  networks, critic, adapter, optimisers, a network read back from a run folder, path pinning).
- :mod:`skdlib.train.sampling`: sample order and augmentation seeds, functions of the iteration.
- :mod:`skdlib.train.step`: one iteration (student step with the critic fixed, critic step with
  the student fixed), returning a dict of every loss term.
- :mod:`skdlib.train.distributed`: process groups under torchrun, synchronised batch-norm on CPU.
- :mod:`skdlib.train.loop`: ``train(cfg, run_dir, *, resume, force)`` as set-up, iteration and
  finish; ``python -m skdlib.train``.

Importing this package does no work; import the submodules you need.
"""

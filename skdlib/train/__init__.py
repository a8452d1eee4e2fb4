"""Training: configuration (``skdlib.train.config``) and, later, the distillation step and loop.

Importing this package does no work; import the submodules you need.
"""

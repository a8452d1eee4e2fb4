"""Convert a released file into an skdlib checkpoint::

    python -m skdlib.models.convert --layout skd_authors \\
        CS_scenes_38413_0.7832174615268139.pth teacher.pt

The network is read off the file (depth, DeepLabV3 or PSPNet, number of classes; ``--model`` and
``--num-classes`` override), built as the layout's variant, filled strictly by
:func:`skdlib.models.load_released`, and its state dict written to ``OUT`` (atomically; an
existing ``OUT`` only with ``--force``). ``OUT`` then loads with
:func:`skdlib.models.load_pretrained` into ``build_model(name, K, variant=...)``, e.g. as
``model.teacher_checkpoint`` with ``model.teacher_variant`` and the layout ``skdlib``. A
``csail_imagenet`` file becomes a backbone file (``model.student_pretrained``).

Bad input (a missing, torn or foreign file, a layout that does not fit) prints one line naming
it and exits 2; ``--debug`` shows the traceback instead (:func:`skdlib.errors.run_cli`).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

from skdlib.errors import run_cli
from skdlib.models.build import build_model
from skdlib.models.pretrained import read_state_dict
from skdlib.models.released import LAYOUTS, infer_released, load_released

__all__ = ["convert", "main"]

logger = logging.getLogger("skdlib.models.convert")

_BACKBONE = "backbone."


def _write_atomically(path: Path, state: dict[str, torch.Tensor]) -> None:
    """``torch.save`` into a temporary file beside ``path``, then rename it into place."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(buffer.getvalue())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def convert(
    source: str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    layout: str,
    model: str | None = None,
    num_classes: int | None = None,
    force: bool = False,
) -> str:
    """Write ``source`` (a released file of ``layout``) as an skdlib state dict into ``target``;
    returns a one-line description of what was written and how to use it.

    Raises:
        FileExistsError: ``target`` exists and ``force`` is not set.
        FileNotFoundError, skdlib.errors.CheckpointError, ValueError: see
            :func:`skdlib.models.load_released` and :func:`infer_released`.
    """
    out = Path(target)
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists: choose another OUT or pass --force")
    state = read_state_dict(source)
    name, variant, classes = infer_released(state, layout=layout, source=os.fspath(source))
    name = model or name
    k = num_classes or classes or 1  # an ImageNet backbone has no classifier of ours
    network = build_model(name, k, variant=variant)
    report = load_released(network, source, layout=layout)
    weights = network.state_dict()
    if layout == "csail_imagenet":
        weights = {
            key.removeprefix(_BACKBONE): v
            for key, v in weights.items()
            if key.startswith(_BACKBONE)
        }
        use = f"model.student_pretrained={out} with model.student_variant={variant}"
    else:
        use = f"model.teacher={name} model.teacher_variant={variant} model.teacher_checkpoint={out}"
    _write_atomically(out, weights)
    ignored = ", ".join(report.ignored) or "none"
    return (
        f"wrote {out}: {name} (variant {variant!r}{f', {k} classes' if classes else ''}), "
        f"{len(report.loaded)} tensors from {source} (layout {layout!r}; ignored: {ignored}); "
        f"use it as {use}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m skdlib.models.convert``: parse, convert, print one line."""
    parser = argparse.ArgumentParser(
        prog="python -m skdlib.models.convert",
        description="Convert a released checkpoint (the SKD authors', CIRKD's, an MIT CSAIL "
        "ImageNet backbone) into an skdlib checkpoint.",
    )
    parser.add_argument("--layout", required=True, choices=LAYOUTS, help="the file's layout")
    parser.add_argument("source", metavar="IN", help="the released file")
    parser.add_argument("target", metavar="OUT", help="the skdlib checkpoint to write")
    parser.add_argument("--model", default=None, help="build_model name (default: from IN)")
    parser.add_argument("--num-classes", type=int, default=None, help="default: from IN")
    parser.add_argument("--force", action="store_true", help="overwrite an existing OUT")
    parser.add_argument("--debug", action="store_true", help="tracebacks instead of one line")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")

    def body() -> int:
        line = convert(
            args.source,
            args.target,
            layout=args.layout,
            model=args.model,
            num_classes=args.num_classes,
            force=args.force,
        )
        sys.stdout.write(line + "\n")
        return 0

    return run_cli(body, debug=args.debug, logger=logger)


if __name__ == "__main__":
    raise SystemExit(main())

"""``load_pretrained``: load a checkpoint (file or URL) into a model, safely and loudly.

* Files are read with ``torch.load(..., weights_only=True)`` (:func:`load_torch_file`): a
  checkpoint that would need to unpickle arbitrary objects (and could run code) is refused, and a
  torn file (a crash while it was written, a partial copy) or one that is no PyTorch file is
  named as such; both raise :class:`skdlib.errors.CheckpointError` (a ``ValueError``).
* Accepted layouts: a raw state dict, or a dict holding one under ``"state_dict"`` or ``"model"``;
  a ``"module."`` prefix on every key (``DataParallel``) is dropped.
* Shapes are checked before anything is copied: a mismatch raises a ``ValueError`` that lists
  every offending key with both shapes. Missing and unexpected keys are logged and returned
  (``strict=True`` turns them into a ``ValueError``). BatchNorm's ``num_batches_tracked``
  counters are never reported missing (older checkpoints, torchvision's among them, lack them).
* URLs (``http``, ``https``) are downloaded once into torch hub's checkpoint cache
  (``torch.hub.get_dir()/checkpoints``), with a socket timeout so an unreachable host fails
  fast; ``file://`` URLs are read as local paths.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from skdlib.errors import CheckpointError

__all__ = ["LoadReport", "load_pretrained", "load_torch_file", "read_state_dict"]

logger = logging.getLogger(__name__)

_WRAPPER_KEYS = ("state_dict", "model")
_DATA_PARALLEL_PREFIX = "module."
_COUNTER_SUFFIX = "num_batches_tracked"
_DEFAULT_TIMEOUT_S = 10.0


@dataclass
class LoadReport:
    """What :func:`load_pretrained` (or :func:`skdlib.models.load_released`) did; key names are
    the model's (``prefix`` included), but for ``load_released``'s ``unexpected_keys`` and
    ``ignored``, which are the file's."""

    loaded: list[str] = field(default_factory=list)
    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    source: str = ""
    #: keys of the file left out on purpose (a released layout's classifier, e.g. ``fc.*``)
    ignored: list[str] = field(default_factory=list)


def _download(url: str, *, timeout: float) -> Path:
    """Fetch ``url`` into torch hub's checkpoint cache (once) and return the cached file."""
    name = os.path.basename(urllib.parse.urlparse(url).path) or "checkpoint.pth"
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / name
    if target.is_file():
        logger.info("using cached %s for %s", target, url)
        return target
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("downloading %s to %s", url, target)
    tmp = tempfile.NamedTemporaryFile(dir=cache, prefix=f".{name}.", delete=False)
    try:
        with tmp, urllib.request.urlopen(url, timeout=timeout) as response:
            shutil.copyfileobj(response, tmp)
    except (urllib.error.URLError, OSError) as err:
        Path(tmp.name).unlink(missing_ok=True)
        raise ConnectionError(
            f"could not download source={url!r} (timeout {timeout} s): {err}; "
            "download the file elsewhere and pass its local path"
        ) from err
    os.replace(tmp.name, target)
    return target


def _resolve(source: str | os.PathLike[str], *, timeout: float) -> Path:
    text = os.fspath(source)
    scheme = urllib.parse.urlparse(text).scheme
    if scheme in ("http", "https"):
        return _download(text, timeout=timeout)
    if scheme == "file":
        path = Path(urllib.request.url2pathname(urllib.parse.urlparse(text).path))
    elif scheme == "" or len(scheme) == 1:  # plain path (a one-letter scheme: a drive)
        path = Path(text)
    else:
        raise ValueError(
            f"source={text!r}: unsupported URL scheme {scheme!r} (use a path, file://, http(s)://)"
        )
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (source={text!r})")
    return path


def load_torch_file(
    path: str | os.PathLike[str], *, map_location: str | torch.device = "cpu"
) -> object:
    """``torch.load(path, weights_only=True)``, with errors that name the file.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated or not a PyTorch checkpoint (torch's own error,
            an ``OSError``, ``RuntimeError`` or ``EOFError`` without the file's name, is kept as
            the cause), or loading it would unpickle arbitrary objects.
    """
    source = Path(path)
    if not source.is_file():
        raise FileNotFoundError(f"checkpoint not found: {source}")
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):  # not a pickle of objects: text, another format
            raise CheckpointError(
                f"{source} is truncated or not a PyTorch checkpoint ({source.stat().st_size} "
                f"bytes; the weights-only unpickler read no checkpoint in it)"
            ) from err
        raise CheckpointError(
            f"refusing to load {source}: it is not a plain tensor checkpoint and loading it would "
            f"unpickle arbitrary objects (weights_only=True): {str(err).splitlines()[0]}"
        ) from err
    except (
        RuntimeError,
        OSError,
        EOFError,
        KeyError,
        IndexError,
        ValueError,
        UnicodeDecodeError,
    ) as err:
        # torch's first sentence ("PytorchStreamReader failed reading zip archive: ...",
        # "[Errno 22] Invalid argument"); an EOFError has no message; a text file can leave the
        # legacy unpickler with an IndexError ("pop from empty list").
        reason = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else ""
        reason = f"{type(err).__name__}: {reason}" if reason else type(err).__name__
        raise CheckpointError(
            f"{source} is truncated or not a PyTorch checkpoint ({source.stat().st_size} bytes; "
            f"torch.load said {reason})"
        ) from err


def read_state_dict(
    source: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    timeout: float = _DEFAULT_TIMEOUT_S,
) -> dict[str, torch.Tensor]:
    """Read a checkpoint (path, ``file://`` or ``http(s)://`` URL) into a flat state dict.

    Raises:
        FileNotFoundError: the file does not exist.
        ConnectionError: a URL could not be fetched within ``timeout`` seconds.
        CheckpointError: the file is torn, not a PyTorch checkpoint, or needs arbitrary
            unpickling (refused).
        ValueError: the file holds no state dict.
    """
    path = _resolve(source, timeout=timeout)
    obj = load_torch_file(path, map_location=map_location)
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise ValueError(
            f"{path} holds no state dict (expected a dict of name -> tensor, or one under "
            f"{list(_WRAPPER_KEYS)}), got {type(obj).__name__}"
        )
    state = dict(obj)
    if state and all(k.startswith(_DATA_PARALLEL_PREFIX) for k in state):
        state = {k[len(_DATA_PARALLEL_PREFIX) :]: v for k, v in state.items()}
    return state


def load_pretrained(
    model: nn.Module,
    source: str | os.PathLike[str],
    *,
    strict: bool = False,
    prefix: str = "",
    source_prefix: str = "",
    map_location: str | torch.device = "cpu",
    timeout: float = _DEFAULT_TIMEOUT_S,
) -> LoadReport:
    """Load a checkpoint into ``model`` (or into its submodule named by ``prefix``).

    Args:
        model: the receiving module.
        source: a local path, a ``file://`` URL or an ``http(s)://`` URL (cached by torch hub).
        strict: raise if any key is missing or unexpected (shape mismatches always raise).
        prefix: the checkpoint's keys are relative to this prefix of the model's keys, e.g.
            ``"backbone."`` loads a torchvision ResNet checkpoint (``conv1.weight`` ...) into
            ``model.backbone``; only model keys under the prefix can be missing.
        source_prefix: read only the checkpoint's keys under this prefix, with the prefix
            removed: ``"backbone."`` takes the backbone of a whole network of the same kind
            (e.g. a pretraining run's ``final.pt``).
        map_location: where the tensors are loaded before copying.
        timeout: socket timeout in seconds for URLs.

    Returns:
        :class:`LoadReport` with the loaded, missing and unexpected keys (model names).

    Raises:
        FileNotFoundError, ConnectionError: see :func:`read_state_dict`.
        ValueError: shapes differ (every such key listed with both shapes), nothing matches, or
            ``strict`` and keys are missing or unexpected; a refused (unsafe) checkpoint.
    """
    if prefix and not prefix.endswith("."):
        prefix = prefix + "."
    checkpoint = read_state_dict(source, map_location=map_location, timeout=timeout)
    if source_prefix:
        checkpoint = {
            k.removeprefix(source_prefix): v
            for k, v in checkpoint.items()
            if k.startswith(source_prefix)
        }
        if not checkpoint:
            raise ValueError(f"{os.fspath(source)!r} holds no key under {source_prefix!r}")
    target = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    if not target:
        raise ValueError(f"model has no parameters or buffers under prefix={prefix!r}")

    renamed = {prefix + k: v for k, v in checkpoint.items()}
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in renamed.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise ValueError(
            f"shape mismatch loading {os.fspath(source)!r} into the model for "
            f"{len(mismatched)} key(s):\n  " + "\n  ".join(mismatched)
        )
    matched = {k: v for k, v in renamed.items() if k in target}
    report = LoadReport(
        loaded=sorted(matched),
        missing_keys=sorted(
            k for k in target if k not in renamed and not k.endswith(_COUNTER_SUFFIX)
        ),
        unexpected_keys=sorted(k for k in renamed if k not in target),
        source=os.fspath(source),
    )
    if not matched:
        raise ValueError(
            f"no key of {report.source!r} matches the model under prefix={prefix!r} "
            f"(checkpoint keys start with e.g. {sorted(checkpoint)[:3]}, "
            f"model keys with {sorted(target)[:3]})"
        )
    if strict and (report.missing_keys or report.unexpected_keys):
        raise ValueError(
            f"strict load of {report.source!r}: missing keys {report.missing_keys}, "
            f"unexpected keys {report.unexpected_keys}"
        )
    model.load_state_dict(matched, strict=False)
    if report.missing_keys:
        logger.warning(
            "%d key(s) missing from %s: %s",
            len(report.missing_keys),
            report.source,
            report.missing_keys,
        )
    if report.unexpected_keys:
        logger.info(
            "%d unexpected key(s) in %s skipped: %s",
            len(report.unexpected_keys),
            report.source,
            report.unexpected_keys,
        )
    logger.info("loaded %d tensor(s) from %s", len(report.loaded), report.source)
    return report

"""Any PyTorch segmentation module as a skdlib network: :func:`tap` reads its outputs by name.

``tap(module, logits=..., features={"head": "decoder.block3"})`` wraps a module whose forward
returns a tensor, a dict (torchvision's ``{"out": ..., "aux": ...}``) or a tuple/list, and makes
its forward return :class:`~skdlib.models.outputs.SegmentationOutput`. Each named output comes
from one *source*:

* ``None`` (``logits`` only): the forward's return value itself, a tensor;
* an ``int``: that position of a returned tuple or list (timm's ``features_only`` lists);
* a ``str``: that key of a returned dict, else the submodule of that name (as
  ``module.get_submodule`` spells it, e.g. ``"decoder.block3"``), whose output is read by a forward
  hook (as mmrazor's recorders and torchdistill's forward hooks do).

Nothing of the module is copied or changed: the wrapper holds the module itself (``.module``), its
parameters are the module's, and its ``state_dict`` has the module's own keys (state-dict hooks
take the wrapper's ``module.`` prefix off when saving and put it back when loading), so a
checkpoint of the plain module loads into the wrapper and the other way round. The forward hooks
live for one forward call only (registered before it, removed after it, also when it raises):
no hook is left on the module, whether the wrapper is kept, dropped or never called, and a module
replaced by name (``SyncBatchNorm`` under torchrun) is still found.

At construction the module runs once on a probe image (eval mode, no gradient, the training flag
of every submodule and the random state restored after), which checks every source and gives
what the rest of skdlib reads from a network: ``num_classes`` (``K`` of the logits),
``output_stride`` (probe side / logit side) and ``feature_channels`` (name -> ``C``).
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from skdlib.models.outputs import SegmentationOutput

__all__ = ["TAP_OPTIONS", "TappedModel", "tap"]

#: The keyword options of :func:`tap` (the keys ``model.student_taps`` / ``teacher_taps`` accept).
TAP_OPTIONS = ("logits", "aux_logits", "features", "output_stride", "probe_size", "in_channels")

_INNER = "module"  # the wrapper's attribute holding the module (taken off its state-dict keys)
_PROBE_SIZE = (64, 64)  # default probe image (H, W): a whole number of cells at stride 32
_LOGITS, _AUX = "logits", "aux_logits"


@dataclass(frozen=True)
class _Source:
    """Where one named output comes from: ``kind`` is ``output``, ``index``, ``key`` or
    ``module``."""

    kind: str
    where: int | str | None = None

    def describe(self) -> str:
        if self.kind == "output":
            return "the forward's return value"
        if self.kind == "index":
            return f"position {self.where} of the returned sequence"
        if self.kind == "key":
            return f"key {self.where!r} of the returned dict"
        return f"the output of module {self.where!r}"


class TappedModel(nn.Module):
    """A module whose forward returns :class:`SegmentationOutput`; built by :func:`tap`.

    Attributes:
        module: the wrapped module itself (not a copy).
        num_classes: ``K``, the channels of the logits.
        output_stride: input side / logit side (1 for full-resolution logits).
        feature_channels: channels of every tapped feature map, by name.
        sources: ``{output name: description of its source}``, for display.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        logits: int | str | None = None,
        aux_logits: int | str | None = None,
        features: Mapping[str, int | str] | None = None,
        output_stride: int | None = None,
        probe_size: Sequence[int] = _PROBE_SIZE,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise ValueError(f"tap: expected an nn.Module, got {type(module).__name__}")
        if isinstance(module, TappedModel):
            raise ValueError(f"tap: the module is tapped already ({module.sources})")
        self.module = module
        self.register_state_dict_post_hook(_strip_inner_prefix)
        self.register_load_state_dict_pre_hook(_add_inner_prefix)
        self._name = type(module).__name__
        wanted = _check_arguments(self._name, logits, aux_logits, features, probe_size)
        self._check_int("in_channels", in_channels)
        self._modules_named = frozenset(name for name, _ in module.named_modules() if name)
        out, captured, image = self._probe(wanted, tuple(probe_size), in_channels)
        self._sources = {name: self._resolve(name, sel, out) for name, sel in wanted.items()}
        probe = self._outputs(out, captured, image, training=False)
        self.num_classes: int = int(probe.logits.shape[1])
        self.output_stride: int = self._stride(image, probe.logits, output_stride)
        self.feature_channels: dict[str, int] = {
            name: int(f.shape[1]) for name, f in probe.features.items()
        }
        self.sources: dict[str, str] = {k: s.describe() for k, s in self._sources.items()}

    # ------------------------------------------------------------------ construction
    def _check_int(self, name: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"tap({self._name}): {name} must be a positive int, got {value!r}")

    def _probe(
        self, wanted: Mapping[str, int | str | None], size: tuple[int, int], in_channels: int
    ) -> tuple[Any, dict[str, Any], torch.Tensor]:
        """One forward of a zero image ``(1, in_channels, *size)`` in eval mode, without
        gradients; every submodule's training flag and the CPU random state restored after."""
        first = next(self.module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
        dtype = first.dtype if first is not None and first.is_floating_point() else torch.float32
        image = torch.zeros(1, in_channels, *size, device=device, dtype=dtype)
        names = [s for s in wanted.values() if isinstance(s, str) and s in self._modules_named]
        modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                out, captured = self._run(image, names)
        finally:
            for m, mode in modes:
                m.training = mode
        return out, captured, image

    def _resolve(self, name: str, selector: int | str | None, out: Any) -> _Source:
        """The source of output ``name``: checked against the probe's return value."""
        if selector is None:
            return _Source("output")
        if isinstance(selector, int):
            return _Source("index", selector)
        if isinstance(out, Mapping) and selector in out:
            return _Source("key", selector)
        if selector in self._modules_named:
            return _Source("module", selector)
        if name == _AUX and isinstance(out, Mapping):
            return _Source("key", selector)  # a key the forward may return in training mode only
        keys = f" nor a key of its returned dict {sorted(out)}" if isinstance(out, Mapping) else ""
        close = difflib.get_close_matches(selector, sorted(self._modules_named), n=3)
        hint = f"; close module names: {close}" if close else ""
        raise ValueError(
            f"tap({self._name}): {_label(name)} = {selector!r} is not a module of "
            f"{self._name}{keys}{hint}"
        )

    def _stride(self, image: torch.Tensor, logits: torch.Tensor, given: int | None) -> int:
        (h, w), (lh, lw) = image.shape[-2:], logits.shape[-2:]
        found = {h // lh, w // lw} if h % lh == 0 and w % lw == 0 else set()
        if given is not None:
            self._check_int("output_stride", given)
            if found and found != {given}:
                raise ValueError(
                    f"tap({self._name}): output_stride={given}, but the probe image {h}x{w} gave "
                    f"{lh}x{lw} logits (stride {sorted(found)})"
                )
            return given
        if len(found) != 1:
            raise ValueError(
                f"tap({self._name}): the probe image {h}x{w} gave {lh}x{lw} logits, no single "
                "whole stride; pass output_stride= or a probe_size= the network divides"
            )
        return found.pop()

    # ------------------------------------------------------------------ forward
    def _run(self, image: torch.Tensor, names: Sequence[str]) -> tuple[Any, dict[str, Any]]:
        """The module's return value for ``image`` and the outputs of the modules ``names``,
        caught by forward hooks that live for this call only."""
        captured: dict[str, Any] = {}
        handles = [
            self.module.get_submodule(name).register_forward_hook(
                functools.partial(_keep, captured, name)
            )
            for name in dict.fromkeys(names)
        ]
        try:
            out = self.module(image)
        finally:
            for handle in handles:
                handle.remove()
        return out, captured

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        """``image`` ``(N, C, H, W)`` -> logits ``(N, K, H/s, W/s)``, aux logits (or ``None``)
        and the tapped feature maps ``(N, C_f, h, w)`` by name."""
        names = [s.where for s in self._sources.values() if s.kind == "module"]
        out, captured = self._run(image, names)  # type: ignore[arg-type]
        return self._outputs(out, captured, image, training=self.training)

    def _outputs(
        self, out: Any, captured: Mapping[str, Any], image: torch.Tensor, *, training: bool
    ) -> SegmentationOutput:
        logits = self._map(_LOGITS, self._pick(_LOGITS, out, captured), image)  # (N, K, h, w)
        aux = (
            self._pick(_AUX, out, captured, optional=not training)
            if _AUX in self._sources
            else None
        )
        features = {
            name: self._map(_label(name), self._pick(name, out, captured), image)
            for name in self._sources
            if name not in (_LOGITS, _AUX)
        }
        return SegmentationOutput(
            logits=logits,
            aux_logits=None if aux is None else self._map(_AUX, aux, image),
            features=features,
        )

    def _pick(self, name: str, out: Any, captured: Mapping[str, Any], optional: bool = False):
        """The value of output ``name`` in this forward (``None`` when ``optional`` and absent)."""
        source = self._sources[name]
        if source.kind == "output":
            return out
        if source.kind == "module":
            if source.where not in captured:
                raise ValueError(
                    f"tap({self._name}): {_label(name)} = module {source.where!r} did not run "
                    "in this forward (its output was never produced)"
                )
            return captured[source.where]
        if source.kind == "key" and isinstance(out, Mapping) and source.where in out:
            return out[source.where]
        if source.kind == "index" and isinstance(out, (tuple, list)):
            position = int(source.where)  # type: ignore[arg-type]
            if -len(out) <= position < len(out):
                return out[position]
        if optional:
            return None
        raise ValueError(
            f"tap({self._name}): {_label(name)} = {source.describe()}, but the forward returned "
            f"{_describe_value(out)}"
        )

    def _map(self, name: str, value: Any, image: torch.Tensor) -> torch.Tensor:
        """``value`` checked to be a float map ``(N, C, h, w)`` of the image's batch."""
        if (
            not isinstance(value, torch.Tensor)
            or value.dim() != 4
            or value.shape[0] != image.shape[0]
            or not value.is_floating_point()
        ):
            letter = "K" if "logits" in name else "C"
            hint = ""
            if isinstance(value, (Mapping, tuple, list)):
                hint = f"; pick one of its entries with {name.split('[')[0]}=<key or position>"
            raise ValueError(
                f"tap({self._name}): {name} must be a floating-point map (N, {letter}, h, w) with "
                f"N = {image.shape[0]} (the image's batch), got {_describe_value(value)}{hint}"
            )
        return value

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.sources.items())


def tap(
    module: nn.Module,
    *,
    logits: int | str | None = None,
    aux_logits: int | str | None = None,
    features: Mapping[str, int | str] | None = None,
    output_stride: int | None = None,
    probe_size: Sequence[int] = _PROBE_SIZE,
    in_channels: int = 3,
) -> TappedModel:
    """Wrap ``module`` so that its forward returns :class:`SegmentationOutput` (module docstring).

    Args:
        module: any ``nn.Module`` whose forward takes an image ``(N, in_channels, H, W)`` and
            returns a tensor, a dict or a tuple/list.
        logits: source of the class scores ``(N, K, h, w)``: ``None`` (the return value, a
            tensor), a position, a dict key (``"out"``) or a module name.
        aux_logits: source of the auxiliary head's scores (``"aux"``), or ``None`` for none. A
            dict key missing from the return value in eval mode gives ``None`` there (heads that
            run in training only), in training mode an error.
        features: ``{name: source}`` of the feature maps ``(N, C, h, w)`` the terms read by name,
            e.g. ``{"head": "decoder.block3"}`` (the pair-wise term reads ``distill.pair_feature``,
            ``"head"`` by default).
        output_stride: the logits' stride; ``None`` measures it on the probe (checked when given).
        probe_size: ``(H, W)`` of the probe image run at construction.
        in_channels: channels of the probe image.

    Returns:
        a :class:`TappedModel` holding ``module`` itself.

    Raises:
        ValueError: a source that is no module of ``module`` (close names listed), nor a key of
            its returned dict; a module that does not run in the probe's forward; an output that
            is not ``(N, K, h, w)``; bad argument types. Each message names the output, its
            source and the module's class.
    """
    return TappedModel(
        module,
        logits=logits,
        aux_logits=aux_logits,
        features=features,
        output_stride=output_stride,
        probe_size=probe_size,
        in_channels=in_channels,
    )


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _check_arguments(
    owner: str,
    logits: Any,
    aux_logits: Any,
    features: Any,
    probe_size: Any,
) -> dict[str, int | str | None]:
    """``{output name: selector}`` from the arguments of :func:`tap`, their types checked."""

    def selector(name: str, value: Any, *, allow_none: bool) -> None:
        ok = (isinstance(value, str) and value) or (
            isinstance(value, int) and not isinstance(value, bool)
        )
        if not ok and not (allow_none and value is None):
            raise ValueError(
                f"tap({owner}): {name} must be a module name, a dict key or a position"
                f"{' (or None)' if allow_none else ''}, got {value!r}"
            )

    selector(_LOGITS, logits, allow_none=True)
    selector(_AUX, aux_logits, allow_none=True)
    if features is not None and not isinstance(features, Mapping):
        raise ValueError(
            f"tap({owner}): features must be a mapping name -> source, got {features!r}"
        )
    wanted: dict[str, int | str | None] = {_LOGITS: logits}
    if aux_logits is not None:
        wanted[_AUX] = aux_logits
    for name, value in (features or {}).items():
        if not isinstance(name, str) or not name or name in (_LOGITS, _AUX):
            raise ValueError(
                f"tap({owner}): feature names must be non-empty strings other than 'logits' and "
                f"'aux_logits', got {name!r}"
            )
        selector(f"features[{name!r}]", value, allow_none=False)
        wanted[name] = value
    if (
        not isinstance(probe_size, (tuple, list))
        or len(probe_size) != 2
        or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in probe_size)
    ):
        raise ValueError(
            f"tap({owner}): probe_size must be (H, W), positive ints, got {probe_size!r}"
        )
    return wanted


def _label(name: str) -> str:
    """How an output is named in messages: ``logits``, ``aux_logits`` or ``features['head']``."""
    return name if name in (_LOGITS, _AUX) else f"features[{name!r}]"


def _keep(store: dict[str, Any], name: str, module: nn.Module, args: Any, output: Any) -> None:
    """Forward hook: keep the module's output under its name (a module run twice: the last)."""
    store[name] = output


def _describe_value(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, Mapping):
        return f"a dict with keys {sorted(map(str, value))}"
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)} items"
    return f"a {type(value).__name__}"


def _strip_inner_prefix(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """State-dict post-hook: ``<prefix>module.<key>`` -> ``<prefix><key>`` (and the metadata)."""
    inner = f"{prefix}{_INNER}."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        own = prefix[:-1]
        if prefix + _INNER in metadata:
            metadata[own] = metadata.pop(prefix + _INNER)
        for key in [k for k in metadata if k.startswith(inner)]:
            metadata[prefix + key[len(inner) :]] = metadata.pop(key)


def _add_inner_prefix(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    *args: Any,
) -> None:
    """Load-state-dict pre-hook: ``<prefix><key>`` -> ``<prefix>module.<key>`` (and the
    metadata), the inverse of :func:`_strip_inner_prefix`."""
    inner = f"{prefix}{_INNER}."
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        own = prefix[:-1]
        moved = {
            (prefix + _INNER if key == own else inner + key[len(prefix) :]): value
            for key, value in metadata.items()
            if key == own or (key.startswith(prefix) and key != own)
        }
        metadata.update(moved)

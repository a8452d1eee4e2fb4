"""The embedded data set: deterministic street-like scenes with dense labels.

Nothing can be downloaded where the book is built, so runs, tests and chapters default to a data
set drawn here. Each scene has a horizon and a vanishing point; a road and two sidewalks recede to
it, buildings (with window grids) and trees line the street under a sky, and cars, persons and
poles with signs stand on the ground, smaller near the horizon, the nearer ones occluding the
farther. The colours are chosen so that a pixel's colour alone does not give its class:

- road and sidewalk draw from the same greys (the sidewalk has tiles and a curb, the road lane
  marks and fine grain);
- cars draw from the building colours (a car has wheels, windows and its place on the road);
- persons draw from the vegetation greens (a person has a head, a torso, legs);
- the sky shares whites and light greys with buildings, poles share dark greys with tyres;
- every image has its own brightness, colour cast, a shadow and sensor noise.

``skdlib.analysis.context.pixel_vs_context_probe`` measures how much a per-pixel classifier falls
short of a small convolutional network with context on the result.

Layout written under ``out``::

    manifest.json            written last: generator version, seed, size, counts, file checksums
    classes.json             names and palette
    train/images/000000.png  RGB
    train/labels/000000.png  uint8 class ids (255 = ignore; the generator labels every pixel)
    val/...

Every image is drawn from its own random stream ``(seed, split, index)``, so an image does not
depend on how many others are drawn, and the same seed gives the same bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from skdlib.constants import IGNORE_INDEX
from skdlib.filelock import FileLock

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
CLASSES_NAME = "classes.json"
SPLITS = ("train", "val")
SPLIT_STREAM = {"train": 0, "val": 1}

CLASS_NAMES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "vegetation",
    "sky",
    "car",
    "person",
    "pole",
)
# Cityscapes colours of the same classes (pole stands for pole and sign).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128),
    (244, 35, 232),
    (70, 70, 70),
    (107, 142, 35),
    (70, 130, 180),
    (0, 0, 142),
    (220, 20, 60),
    (153, 153, 153),
)
ROAD, SIDEWALK, BUILDING, VEGETATION, SKY, CAR, PERSON, POLE = range(len(CLASS_NAMES))

DEFAULT_HEIGHT = 128
DEFAULT_WIDTH = 256
DEFAULT_NUM_TRAIN = 300
DEFAULT_NUM_VAL = 100
#: Size factor of the small objects (persons; poles' thickness and signs). 1.0 draws the original
#: scenes byte for byte; larger values make them segmentable at output stride 8 on small images.
DEFAULT_SMALL_OBJECT_SCALE = 1.0
#: The generator's options (the keyword arguments of :func:`ensure_embedded` that make a data set).
GENERATOR_OPTIONS = ("seed", "height", "width", "num_train", "num_val", "small_object_scale")

# Colour families (RGB means). Classes draw from overlapping subsets of them.
_FAMILIES: dict[str, tuple[float, float, float]] = {
    "grey_dark": (72.0, 72.0, 76.0),
    "grey_mid": (112.0, 112.0, 116.0),
    "grey_light": (160.0, 160.0, 166.0),
    "white": (212.0, 214.0, 220.0),
    "black": (36.0, 36.0, 42.0),
    "beige": (184.0, 164.0, 128.0),
    "brick": (150.0, 72.0, 56.0),
    "blue": (62.0, 84.0, 150.0),
    "green": (72.0, 122.0, 52.0),
    "dark_green": (42.0, 72.0, 38.0),
    "olive": (112.0, 116.0, 62.0),
    "yellow": (200.0, 178.0, 64.0),
    "red": (178.0, 42.0, 42.0),
    "sky_blue": (132.0, 170.0, 214.0),
    "brown": (96.0, 72.0, 50.0),
}
_CLASS_FAMILIES: dict[str, tuple[str, ...]] = {
    "ground": ("grey_mid", "grey_dark", "grey_light"),
    "building": ("grey_light", "beige", "brick", "blue", "white", "grey_dark", "olive"),
    "vegetation": ("green", "dark_green", "olive"),
    "sky": ("sky_blue", "white", "grey_light"),
    "car": ("brick", "blue", "white", "black", "grey_light", "red", "beige", "dark_green"),
    "person": ("green", "dark_green", "olive", "black", "blue", "red", "beige"),
    "pole": ("grey_dark", "grey_mid", "black", "brown"),
    "sign": ("red", "blue", "yellow", "white"),
    "trunk": ("brown", "grey_dark", "black"),
}


# ----------------------------------------------------------------------------------------------
# Drawing helpers (vectorised over pixels; Python loops run over objects only)
# ----------------------------------------------------------------------------------------------


def _colour(rng: np.random.Generator, group: str, jitter: float = 14.0) -> np.ndarray:
    """A colour ``(3,)`` drawn from one of the group's families, with jitter."""
    names = _CLASS_FAMILIES[group]
    base = np.asarray(_FAMILIES[names[int(rng.integers(len(names)))]])
    return np.clip(base + rng.normal(0.0, jitter, size=3), 0.0, 255.0)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cell: float) -> np.ndarray:
    """Bilinearly interpolated random grid ``(H, W)`` in about [-1, 1], blobs of ``cell`` pixels."""
    cell = max(cell, 1.0)
    gh, gw = int(height / cell) + 2, int(width / cell) + 2
    grid = rng.uniform(-1.0, 1.0, size=(gh, gw))
    ys = np.arange(height) / cell  # (H,)
    xs = np.arange(width) / cell  # (W,)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]  # (H, 1), (1, W)
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx  # (H, W)
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx  # (H, W)
    return top * (1 - fy) + bottom * fy


class _Canvas:
    """An RGB float image and its label map, painted back to front."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        self.image = np.zeros((height, width, 3), dtype=np.float64)
        self.label = np.full((height, width), IGNORE_INDEX, dtype=np.uint8)
        self.yy, self.xx = np.mgrid[0:height, 0:width].astype(np.float64)  # (H, W) each

    def paint(self, mask: np.ndarray, colour: np.ndarray | float, label: int) -> None:
        """Paint ``colour`` (``(3,)`` or ``(H, W, 3)`` or scalar) where ``mask`` ``(H, W)``
        holds."""
        if isinstance(colour, np.ndarray) and colour.ndim == 3:
            self.image[mask] = colour[mask]
        else:
            self.image[mask] = colour
        self.label[mask] = label

    def textured(self, base: np.ndarray, texture: np.ndarray, amount: float) -> np.ndarray:
        """``(H, W, 3)`` colour: ``base`` modulated by ``texture`` ``(H, W)`` of about [-1, 1]."""
        return base[None, None, :] * (1.0 + amount * texture[..., None])  # (H, W, 3)


@dataclass(frozen=True)
class _Street:
    """The street's geometry, shared by the parts of a scene drawn after the ground."""

    horizon: float
    vanish_x: float
    road_half: float  #: half-width of the road at the bottom row
    walk_half: float  #: half-width of the sidewalks' outer edge at the bottom row
    edge_row: np.ndarray  #: (H, W) the facades' foot row per column
    walk: np.ndarray  #: (H, W) sidewalk mask (curb excluded)
    road: np.ndarray  #: (H, W) road mask
    grain: np.ndarray  #: (H, W) fine noise shared by textures


def _draw_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    *,
    small_object_scale: float = DEFAULT_SMALL_OBJECT_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """One scene: image ``(H, W, 3)`` uint8 and label ``(H, W)`` uint8.

    Drawn back to front: sky, ground, facades, objects, then lighting (the order of the random
    draws is part of the generator's version). ``small_object_scale`` multiplies the height and
    width of persons and the thickness of poles and the size of their signs (poles keep their
    height); it draws no extra random numbers, so every other part of the scene is the same at
    any scale.
    """
    c = _Canvas(height, width)
    horizon = height * rng.uniform(0.36, 0.5)
    vanish_x = width * rng.uniform(0.35, 0.65)
    _draw_sky(rng, c)
    street = _draw_ground(rng, c, horizon, vanish_x)
    _draw_facades(rng, c, street)
    _draw_objects(rng, c, street, small_object_scale=small_object_scale)
    return _light(rng, c, street), c.label


def _draw_sky(rng: np.random.Generator, c: _Canvas) -> None:
    """A vertical gradient from one sky colour to a lighter one, with faint clouds."""
    height, width = c.height, c.width
    sky_top, sky_bottom = _colour(rng, "sky"), _colour(rng, "sky")
    t = (c.yy / height)[..., None]  # (H, W, 1)
    sky = sky_top[None, None, :] * (1 - t) + sky_bottom[None, None, :] * t  # (H, W, 3)
    sky = sky * (1.0 + 0.06 * _smooth_noise(rng, height, width, height / 6))[..., None]
    c.paint(np.ones((height, width), dtype=bool), sky, SKY)


def _draw_ground(rng: np.random.Generator, c: _Canvas, horizon: float, vanish_x: float) -> _Street:
    """Road wedge inside a sidewalk wedge (the same greys, told apart by texture), lane marks."""
    height, width, yy, xx = c.height, c.width, c.yy, c.xx
    depth = np.clip((yy - horizon) / (height - horizon), 0.0, 1.0)  # (H, W): 0 horizon, 1 bottom
    road_half = width * rng.uniform(0.3, 0.55)  # half-width of the road at the bottom row
    walk_half = road_half * rng.uniform(1.5, 2.1)
    lateral = np.abs(xx - vanish_x)
    ground = yy > horizon
    edge_row = horizon + (height - horizon) * lateral / walk_half  # (H, W): facade foot per column
    grain = rng.normal(0.0, 1.0, size=(height, width))
    road_colour, walk_colour = _colour(rng, "ground"), _colour(rng, "ground")
    walk = ground & (lateral < walk_half * depth)
    inv_depth = 1.0 / (yy - horizon + 1.0)  # (H, W): grows toward the horizon
    tile_v = np.mod(inv_depth * height * rng.uniform(1.5, 2.5), 1.0) < 0.22
    tile_u = np.mod((xx - vanish_x) * inv_depth * rng.uniform(1.2, 2.0), 1.0) < 0.18
    tiles = (tile_u | tile_v).astype(np.float64)
    walk_img = c.textured(walk_colour, 0.04 * grain - 0.22 * tiles, 1.0)
    c.paint(walk, walk_img, SIDEWALK)
    curb_half = road_half * 1.08
    curb = ground & (lateral < curb_half * depth) & (lateral >= road_half * depth)
    c.paint(curb, np.clip(walk_colour * 1.35 + 20.0, 0, 255), SIDEWALK)
    road = ground & (lateral < road_half * depth)
    road_img = c.textured(
        road_colour, 0.1 * grain + 0.05 * _smooth_noise(rng, height, width, 6), 1.0
    )
    c.paint(road, road_img, ROAD)
    lane_offset = rng.uniform(-0.15, 0.15) * road_half
    lane = road & (np.abs(xx - vanish_x - lane_offset * depth) < 0.02 * road_half * depth + 0.3)
    dashes = np.mod(inv_depth * height * 0.8, 1.0) < 0.5
    c.paint(lane & dashes, np.asarray(_FAMILIES["white"]) * rng.uniform(0.85, 1.05), ROAD)
    return _Street(horizon, vanish_x, road_half, walk_half, edge_row, walk, road, grain)


def _draw_facades(rng: np.random.Generator, c: _Canvas, street: _Street) -> None:
    """Blocks of buildings (window grids) or trees along both sides, above the sidewalk."""
    height, width, yy, xx = c.height, c.width, c.yy, c.xx
    grain = street.grain
    x = 0.0
    while x < width:
        block_w = width * rng.uniform(0.08, 0.22)
        x0, x1 = x, min(x + block_w, width)
        x = x1
        centre_lat = abs((x0 + x1) / 2 - street.vanish_x) / (width / 2)
        top = street.horizon - height * (0.1 + 0.5 * centre_lat) * rng.uniform(0.5, 1.2)
        cols = (xx >= x0) & (xx < x1)
        facade = cols & (yy >= top) & (yy < street.edge_row) & ~street.walk & ~street.road
        if rng.uniform() < 0.7:
            wall = _colour(rng, "building")
            period_x = max(3.0, (x1 - x0) / rng.integers(2, 6))
            period_y = max(3.0, height * rng.uniform(0.04, 0.08) * (0.4 + centre_lat))
            win = (np.mod(xx - x0, period_x) > 0.35 * period_x) & (
                np.mod(yy - top, period_y) > 0.4 * period_y
            )
            win_colour = _colour(rng, "building") * rng.uniform(0.35, 0.7)
            img = np.where(
                win[..., None], win_colour[None, None, :], wall[None, None, :]
            )  # (H, W, 3)
            img = img * (1.0 + 0.05 * grain[..., None])
            c.paint(facade, img, BUILDING)
        else:
            leaf = _colour(rng, "vegetation")
            img = c.textured(
                leaf, 0.25 * _smooth_noise(rng, height, width, 2.5) + 0.06 * grain, 1.0
            )
            c.paint(facade, img, VEGETATION)


def _draw_objects(
    rng: np.random.Generator, c: _Canvas, street: _Street, *, small_object_scale: float
) -> None:
    """Cars, persons, poles and trees on the ground, far (near the horizon) to near so that near
    ones occlude far ones."""
    horizon, vanish_x = street.horizon, street.vanish_x
    road_half, walk_half = street.road_half, street.walk_half
    objects: list[tuple[float, str]] = []
    for kind, low, high in (("car", 2, 6), ("person", 2, 7), ("pole", 1, 4), ("tree", 0, 3)):
        for _ in range(int(rng.integers(low, high + 1))):
            objects.append((float(rng.uniform(0.08, 1.0) ** 0.8), kind))
    objects.sort()
    for d, kind in objects:
        foot = horizon + d * (c.height - horizon)
        side = 1.0 if rng.uniform() < 0.5 else -1.0
        if kind == "car":
            x = vanish_x + rng.uniform(-0.8, 0.8) * road_half * d
            _draw_car(rng, c, foot, x, d, street.grain)
        elif kind == "person":
            lat = rng.uniform(1.05, 0.95 * walk_half / road_half) * road_half * d
            _draw_person(rng, c, foot, vanish_x + side * lat, d, scale=small_object_scale)
        elif kind == "pole":
            lat = rng.uniform(1.1, 1.3) * road_half * d
            _draw_pole(rng, c, foot, vanish_x + side * lat, d, scale=small_object_scale)
        else:
            lat = rng.uniform(1.3, 0.98 * walk_half / road_half) * road_half * d
            _draw_tree(rng, c, foot, vanish_x + side * lat, d)


def _light(rng: np.random.Generator, c: _Canvas, street: _Street) -> np.ndarray:
    """A shadow half-plane, a global gain and colour cast, sensor noise: the uint8 image."""
    yy, xx, horizon = c.yy, c.xx, street.horizon
    img = c.image
    angle = rng.uniform(-0.6, 0.6)
    offset = rng.uniform(0.2, 0.8) * (c.height - horizon)
    shadow = (yy - horizon - offset) > angle * (xx - street.vanish_x)
    img = img * np.where(shadow, rng.uniform(0.6, 0.85), 1.0)[..., None]
    img = img * rng.uniform(0.6, 1.3) * rng.uniform(0.86, 1.14, size=3)[None, None, :]
    img = img + rng.normal(0.0, 5.0, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _ellipse(c: _Canvas, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    """Mask ``(H, W)`` of an axis-aligned ellipse."""
    return ((c.xx - cx) / max(rx, 0.5)) ** 2 + ((c.yy - cy) / max(ry, 0.5)) ** 2 <= 1.0


def _rect(c: _Canvas, x0: float, x1: float, y0: float, y1: float) -> np.ndarray:
    """Mask ``(H, W)`` of ``x0 <= x < x1`` and ``y0 <= y < y1`` (at least one pixel wide)."""
    x1 = max(x1, x0 + 1.0)
    return (c.xx >= x0) & (c.xx < x1) & (c.yy >= y0) & (c.yy < y1)


def _draw_car(
    rng: np.random.Generator, c: _Canvas, foot: float, cx: float, d: float, grain: np.ndarray
) -> None:
    """A car: body, cabin with windows and two wheels, all labelled car."""
    w = c.width * 0.32 * d * rng.uniform(0.85, 1.15)
    h = w * rng.uniform(0.5, 0.62)
    body = _colour(rng, "car")
    lower = _rect(c, cx - w / 2, cx + w / 2, foot - 0.6 * h, foot - 0.12 * h)
    slant = (c.yy - (foot - h)) / (0.42 * h)  # 0 at the roof, 1 at the waist
    inset = 0.28 * w - 0.16 * w * slant
    cabin = (c.yy >= foot - h) & (c.yy < foot - 0.58 * h) & (np.abs(c.xx - cx) < w / 2 - inset)
    glass = cabin & (c.yy >= foot - 0.9 * h) & (np.abs(c.xx - cx) < w / 2 - inset - 0.05 * w)
    c.paint(lower | cabin, body[None, None, :] * (1.0 + 0.03 * grain[..., None]), CAR)
    c.paint(glass, np.asarray(_FAMILIES["blue"]) * rng.uniform(0.35, 0.6), CAR)
    for wx in (cx - 0.3 * w, cx + 0.3 * w):
        c.paint(
            _ellipse(c, wx, foot - 0.12 * h, 0.11 * w, 0.13 * h), _colour(rng, "pole") * 0.6, CAR
        )


def _draw_person(
    rng: np.random.Generator, c: _Canvas, foot: float, cx: float, d: float, *, scale: float = 1.0
) -> None:
    """A person: head, torso, two legs; clothes share the vegetation greens; ``scale``: size."""
    h = c.height * 0.42 * d * rng.uniform(0.85, 1.15) * scale
    w = h * 0.3
    head = _ellipse(c, cx, foot - 0.9 * h, 0.1 * h * 0.8, 0.1 * h)
    torso = _rect(c, cx - w / 2, cx + w / 2, foot - 0.8 * h, foot - 0.42 * h)
    legs = _rect(c, cx - w * 0.4, cx - w * 0.05, foot - 0.42 * h, foot) | _rect(
        c, cx + w * 0.05, cx + w * 0.4, foot - 0.42 * h, foot
    )
    c.paint(legs, _colour(rng, "person"), PERSON)
    c.paint(torso, _colour(rng, "person"), PERSON)
    c.paint(head, np.asarray(_FAMILIES["beige"]) * rng.uniform(0.6, 1.1), PERSON)


def _draw_pole(
    rng: np.random.Generator, c: _Canvas, foot: float, cx: float, d: float, *, scale: float = 1.0
) -> None:
    """A pole with a sign plate (rectangle or disc) near its top; both labelled pole.

    ``scale`` multiplies the pole's thickness and the plate's size, not the pole's height.
    """
    h = c.height * 0.85 * d * rng.uniform(0.85, 1.15)
    w = max(1.0, 0.035 * h * scale)
    c.paint(_rect(c, cx - w / 2, cx + w / 2, foot - h, foot), _colour(rng, "pole"), POLE)
    r = 0.09 * h * scale
    if rng.uniform() < 0.5:
        plate = _ellipse(c, cx, foot - h + r, r, r)
    else:
        plate = _rect(c, cx - r, cx + r, foot - h, foot - h + 1.4 * r)
    c.paint(plate, _colour(rng, "sign"), POLE)


def _draw_tree(rng: np.random.Generator, c: _Canvas, foot: float, cx: float, d: float) -> None:
    """A tree: trunk and textured crown, labelled vegetation (as Cityscapes does)."""
    h = c.height * 0.9 * d * rng.uniform(0.8, 1.2)
    w = max(1.0, 0.05 * h)
    c.paint(
        _rect(c, cx - w / 2, cx + w / 2, foot - 0.6 * h, foot), _colour(rng, "trunk"), VEGETATION
    )
    crown = _ellipse(c, cx, foot - 0.7 * h, 0.28 * h, 0.3 * h)
    leaf = _colour(rng, "vegetation")
    texture = 0.28 * _smooth_noise(rng, c.height, c.width, 2.0)
    c.paint(crown, c.textured(leaf, texture, 1.0), VEGETATION)


# ----------------------------------------------------------------------------------------------
# Writing, manifest, atomic replace
# ----------------------------------------------------------------------------------------------


def _options(
    seed: int, height: int, width: int, num_train: int, num_val: int, small_object_scale: float
) -> dict[str, int | float]:
    """The options a manifest records and ``ensure_embedded`` compares.

    ``small_object_scale`` is recorded only when it differs from its default, so data sets written
    before the option existed keep matching their manifests.
    """
    options: dict[str, int | float] = {
        "generator_version": GENERATOR_VERSION,
        "seed": seed,
        "height": height,
        "width": width,
        "num_train": num_train,
        "num_val": num_val,
    }
    if small_object_scale != DEFAULT_SMALL_OBJECT_SCALE:
        options["small_object_scale"] = float(small_object_scale)
    return options


def _check_options(
    seed: int, height: int, width: int, num_train: int, num_val: int, small_object_scale: float
) -> None:
    """Raise ``ValueError`` for options the generator cannot honour."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if height < 16 or width < 16:
        raise ValueError(
            f"height and width must be at least 16, got height={height}, width={width}"
        )
    if num_train < 1 or num_val < 1:
        raise ValueError(
            f"num_train and num_val must be at least 1, got num_train={num_train}, "
            f"num_val={num_val}"
        )
    if (
        isinstance(small_object_scale, bool)
        or not isinstance(small_object_scale, (int, float))
        or not np.isfinite(small_object_scale)
        or small_object_scale <= 0
    ):
        raise ValueError(
            f"small_object_scale must be a positive number, got {small_object_scale!r}"
        )


def draw_sample(
    seed: int,
    split: str,
    index: int,
    *,
    height: int,
    width: int,
    small_object_scale: float = DEFAULT_SMALL_OBJECT_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: image ``(H, W, 3)`` uint8 and label ``(H, W)`` uint8.

    The scene comes from the random stream ``(seed, split, index)``. ``small_object_scale``: size
    factor of persons and of poles' thickness and signs (see :func:`generate_embedded`).
    """
    if split not in SPLIT_STREAM:
        raise ValueError(f"split must be one of {list(SPLIT_STREAM)}, got {split!r}")
    rng = np.random.default_rng([seed, SPLIT_STREAM[split], index])
    return _draw_scene(rng, height, width, small_object_scale=float(small_object_scale))


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(root: str | os.PathLike[str]) -> dict | None:
    """The manifest of a complete data set under ``root``, or ``None`` if it is missing or
    incomplete."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("complete") is not True:
        return None
    if not isinstance(manifest.get("options"), dict) or not isinstance(manifest.get("files"), dict):
        return None
    return manifest


def verify_embedded(root: str | os.PathLike[str], *, checksums: bool = True) -> bool:
    """Whether ``root`` holds a complete data set: manifest present and every listed file intact."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return False
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            return False
        if checksums and _sha256(path) != digest:
            return False
    return True


def generate_embedded(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    small_object_scale: float = DEFAULT_SMALL_OBJECT_SCALE,
) -> Path:
    """Write the embedded data set to ``out`` atomically and return ``out``.

    ``small_object_scale`` multiplies the height and width of persons and the thickness of poles
    and the size of their signs (1.0, the default, draws the original scenes byte for byte; the
    manifest records the option only when it differs from 1.0).

    The files are written into a temporary sibling directory; the manifest (generator version,
    options, SHA-256 of every file, ``"complete": true``) is written last, then the directory is
    moved into place with ``os.replace``. An existing ``out`` that is an embedded data set
    (complete or not) is replaced; any other non-empty directory is refused with ``ValueError``.
    Use :func:`ensure_embedded` to reuse a complete one. An interrupted run leaves only a
    ``.tmp-*`` sibling, which no reader trusts and the next run removes. A lock file
    ``.<name>.lock`` next to ``out`` serialises concurrent generators.
    """
    _check_options(seed, height, width, num_train, num_val, small_object_scale)
    out = Path(out).absolute()
    with _lock(out):
        _refuse_foreign(out)
        return _generate_unlocked(
            out,
            seed=seed,
            height=height,
            width=width,
            num_train=num_train,
            num_val=num_val,
            small_object_scale=small_object_scale,
        )


def _refuse_foreign(out: Path) -> None:
    """Refuse to replace a non-empty directory that is not an embedded data set."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"out={out} exists and is not a directory")
    if (
        out.is_dir()
        and any(out.iterdir())
        and not any((out / n).exists() for n in (MANIFEST_NAME, CLASSES_NAME, *SPLITS))
    ):
        raise ValueError(
            f"out={out} is a non-empty directory that is not an embedded data set; pick another "
            "folder"
        )


def _generate_unlocked(
    out: Path,
    *,
    seed: int,
    height: int,
    width: int,
    num_train: int,
    num_val: int,
    small_object_scale: float,
) -> Path:
    """Body of :func:`generate_embedded`; the caller holds the lock."""
    _remove_stale_temps(out)
    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        files: dict[str, str] = {}
        (tmp / CLASSES_NAME).write_text(
            json.dumps(
                {"names": list(CLASS_NAMES), "palette": [list(p) for p in PALETTE]}, indent=1
            )
            + "\n"
        )
        files[CLASSES_NAME] = _sha256(tmp / CLASSES_NAME)
        for split, count in (("train", num_train), ("val", num_val)):
            (tmp / split / "images").mkdir(parents=True)
            (tmp / split / "labels").mkdir(parents=True)
            for index in range(count):
                image, label = draw_sample(
                    seed,
                    split,
                    index,
                    height=height,
                    width=width,
                    small_object_scale=small_object_scale,
                )
                for kind, array, mode in (("images", image, "RGB"), ("labels", label, "L")):
                    rel = f"{split}/{kind}/{index:06d}.png"
                    Image.fromarray(array, mode=mode).save(tmp / rel, format="PNG", optimize=False)
                    files[rel] = _sha256(tmp / rel)
        manifest = {
            "options": _options(seed, height, width, num_train, num_val, small_object_scale),
            "files": files,
            "complete": True,
        }
        (tmp / (MANIFEST_NAME + ".part")).write_text(
            json.dumps(manifest, indent=1, sort_keys=True) + "\n"
        )
        os.replace(tmp / (MANIFEST_NAME + ".part"), tmp / MANIFEST_NAME)
        if out.exists():
            _discard(out)
        try:
            os.replace(tmp, out)
        except OSError:
            # A racing process put a data set in place first: keep theirs if it is complete.
            if not verify_embedded(out, checksums=False):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info(
        "generated embedded data set at %s (%d train + %d val, %dx%d) in %.1f s",
        out,
        num_train,
        num_val,
        height,
        width,
        time.perf_counter() - start,
    )
    return out


def _discard(path: Path) -> None:
    """Move an untrusted directory aside (atomic) and delete it."""
    trash = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-old-", dir=path.parent))
    os.replace(path, trash / path.name)
    shutil.rmtree(trash, ignore_errors=True)


def _remove_stale_temps(out: Path) -> None:
    """Delete ``.tmp-<name>-*`` siblings left by interrupted runs (callers hold the lock)."""
    for stale in out.parent.glob(f".tmp-{out.name}-*"):
        logger.warning(
            "removing leftover temporary directory %s from an interrupted generation", stale
        )
        shutil.rmtree(stale, ignore_errors=True)


def _lock(out: Path) -> FileLock:
    """The exclusive lock on ``.<out name>.lock`` beside ``out`` (one generating process)."""
    return FileLock(out.parent / f".{out.name}.lock")


def ensure_embedded(
    root: str | os.PathLike[str],
    *,
    seed: int = 0,
    height: int = DEFAULT_HEIGHT,
    width: int = DEFAULT_WIDTH,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    small_object_scale: float = DEFAULT_SMALL_OBJECT_SCALE,
    checksums: bool = False,
) -> Path:
    """Return ``root`` holding the embedded data set with these options, generating it if needed.

    A complete data set with the same options is reused. A directory without a complete manifest
    (or with a missing file; with ``checksums=True`` also a changed file) is regenerated. A
    complete data set with *other* options is never overwritten: ``ValueError``.
    """
    _check_options(seed, height, width, num_train, num_val, small_object_scale)
    root = Path(root).absolute()
    wanted = _options(seed, height, width, num_train, num_val, small_object_scale)
    with _lock(root):
        manifest = read_manifest(root)
        if manifest is not None and manifest["options"] != wanted:
            raise ValueError(
                f"{root} holds an embedded data set generated with {manifest['options']}, "
                f"not the requested {wanted}; pick another folder or delete this one"
            )
        if manifest is not None and verify_embedded(root, checksums=checksums):
            _remove_stale_temps(root)
            return root
        _refuse_foreign(root)
        if root.exists():
            logger.warning("%s is not a complete embedded data set; regenerating it", root)
        return _generate_unlocked(
            root,
            seed=seed,
            height=height,
            width=width,
            num_train=num_train,
            num_val=num_val,
            small_object_scale=small_object_scale,
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line:
    ``python -m skdlib.data.generate --out DIR --seed S [--height H --width W --train N --val M]``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m skdlib.data.generate", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--out", required=True, type=Path, help="directory to write (replaced if incomplete)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--height", type=int, default=DEFAULT_HEIGHT)
    parser.add_argument("--width", type=int, default=DEFAULT_WIDTH)
    parser.add_argument("--train", type=int, default=DEFAULT_NUM_TRAIN, dest="num_train")
    parser.add_argument("--val", type=int, default=DEFAULT_NUM_VAL, dest="num_val")
    parser.add_argument(
        "--small-object-scale",
        type=float,
        default=DEFAULT_SMALL_OBJECT_SCALE,
        help="size factor of persons and of poles' thickness and signs (1.0: the original scenes)",
    )
    parser.add_argument(
        "--force", action="store_true", help="regenerate even if a complete data set is there"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    options = {
        "seed": args.seed,
        "height": args.height,
        "width": args.width,
        "num_train": args.num_train,
        "num_val": args.num_val,
        "small_object_scale": args.small_object_scale,
    }
    start = time.perf_counter()
    if args.force:
        generate_embedded(args.out, **options)
    else:
        ensure_embedded(args.out, **options)
    logging.getLogger(__name__).info("done in %.1f s: %s", time.perf_counter() - start, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

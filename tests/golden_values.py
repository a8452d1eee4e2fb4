"""Golden values of the losses, stored in ``tests/golden/losses.json`` to catch silent drift."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "losses.json"


def check_golden(values: dict[str, float]) -> None:
    """Compare with the stored values; ``SKD_UPDATE_GOLDEN=1`` rewrites them instead."""
    if os.environ.get("SKD_UPDATE_GOLDEN") == "1":
        data = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
        data.update(values)
        GOLDEN.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        pytest.skip("golden values regenerated")
    data = json.loads(GOLDEN.read_text())
    for key, value in values.items():
        assert math.isclose(value, data[key], rel_tol=1e-6, abs_tol=1e-12), (key, value, data[key])

"""The explorer's computations: loading a runs tree, parity with plain re-derivations, the cache,
invariances, refusals and golden values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skdlib.analysis.explorer import (
    TEACHER,
    ExplorerModels,
    explore,
    load_explorer_models,
    node_size_for,
    probabilities_at,
    random_explorer_models,
)
from skdlib.analysis.runs import RunsTree
from skdlib.data.generate import ensure_embedded
from skdlib.data.transforms import normalize
from skdlib.models.discriminator import Discriminator
from skdlib.train.config import load_config
from skdlib.train.loop import train

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
WITHOUT_HO, WITH_HO = "student w/o HO", "student w/ HO"


def _tiny(data: Path, *extra: str) -> list[str]:
    """Overrides turning a preset into a one-iteration CPU run on the tiny data."""
    return [
        "data.name=embedded",
        f"data.root={data}",
        "data.crop_size=[128,128]",
        "data.scale_range=[1.0,1.0]",
        "data.batch_size=2",
        "data.num_workers=0",
        "train.device=cpu",
        "train.max_iters=1",
        "train.log_every=1",
        "train.eval_every=0",
        "train.checkpoint_every=0",
        *extra,
    ]


@pytest.fixture(scope="module")
def runs_tree(tmp_path_factory) -> Path:
    """``runs/smoke/`` with a teacher, ``pi_pa/seed0`` and ``pi_pa_ho/seed0``, one iteration each.

    The teacher's folder is not the default ``teacher``: only ``index.json`` says where it is."""
    base = tmp_path_factory.mktemp("explorer")
    data = ensure_embedded(base / "data", height=128, width=128, num_train=4, num_val=2)
    root = base / "runs" / "smoke"
    teacher_cfg = load_config(CONFIGS / "teacher_smoke.yaml", _tiny(data))
    train(teacher_cfg, root / "teacher_run", progress=False)
    checkpoint = root / "teacher_run" / "checkpoints" / "final.pt"
    common = ("model.teacher_options.width=0.5", f"model.teacher_checkpoint={checkpoint}")
    train(
        load_config(CONFIGS / "smoke.yaml", _tiny(data, *common, "distill.holistic=false")),
        root / "pi_pa" / "seed0",
        progress=False,
    )
    train(
        load_config(CONFIGS / "smoke.yaml", _tiny(data, *common)),
        root / "pi_pa_ho" / "seed0",
        progress=False,
    )
    experiments = [
        {"name": name, "runs": [{"seed": 0, "run_dir": f"{name}/seed0"}]}
        for name in ("pi_pa", "pi_pa_ho")
    ]
    index = {"profile": "smoke", "teacher": {"run_dir": "teacher_run"}, "experiments": experiments}
    (root / "index.json").write_text(json.dumps(index))
    return root


def _tree(root: Path) -> RunsTree:
    return RunsTree.read(root, project_root=root.parents[1])


@pytest.fixture(scope="module")
def loaded(runs_tree: Path) -> ExplorerModels:
    return load_explorer_models(_tree(runs_tree))


@pytest.fixture(scope="module")
def random_models(tmp_path_factory) -> ExplorerModels:
    return random_explorer_models(
        tmp_path_factory.mktemp("random") / "embedded", num_images=2, height=128, width=128
    )


# --------------------------------------------------------------------------------------------------
# Plain re-derivations
# --------------------------------------------------------------------------------------------------
def _cosine_row(feat: torch.Tensor, node: tuple[int, int]) -> np.ndarray:
    """Cosine similarity of one position of ``feat`` (1, C, h, w) to every position: (h, w)."""
    f = feat[0].double()  # (C, h, w)
    query = f[:, node[0], node[1]]  # (C,)
    dots = torch.einsum("c,chw->hw", query, f)  # (C,) x (C, h, w) -> (h, w)
    return (dots / (query.norm() * f.norm(dim=0))).numpy()


def _kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> np.ndarray:
    """KL(teacher || student) per position of (1, K, h, w) logits, in float64: (h, w)."""
    log_t = torch.log_softmax(teacher_logits[0].double(), dim=0)  # (K, h, w)
    log_s = torch.log_softmax(student_logits[0].double(), dim=0)  # (K, h, w)
    return (log_t.exp() * (log_t - log_s)).sum(dim=0).numpy()  # (K, h, w) -> (h, w)


@pytest.mark.slow
def test_loads_the_runs_tree(loaded: ExplorerModels, runs_tree: Path):
    assert loaded.names == [TEACHER, WITHOUT_HO, WITH_HO]
    assert isinstance(loaded.critic, Discriminator)
    assert loaded.num_images == 2 and len(loaded.class_names) == 8 == len(loaded.palette)
    final = torch.load(
        runs_tree / "pi_pa" / "seed0" / "checkpoints" / "final.pt", weights_only=True
    )
    state = loaded.students[WITHOUT_HO].state_dict()
    assert all(torch.equal(state[k], final[k]) for k in final)
    teacher_final = torch.load(
        runs_tree / "teacher_run" / "checkpoints" / "final.pt", weights_only=True
    )
    assert all(torch.equal(loaded.teacher.state_dict()[k], v) for k, v in teacher_final.items())
    critic_state = torch.load(
        runs_tree / "pi_pa_ho" / "seed0" / "checkpoints" / "last.pt", weights_only=True
    )["critic"]
    assert all(torch.equal(loaded.critic.state_dict()[k], v) for k, v in critic_state.items())
    assert not loaded.teacher.training and not loaded.critic.training


def test_explore_matches_a_plain_derivation(loaded: ExplorerModels):
    pixel = (37, 90)
    result = explore(loaded, 1, pixel)
    item = loaded.dataset[1]
    batch = normalize(item["image"].unsqueeze(0))  # (1, 3, H, W)
    with torch.no_grad():
        outs = {name: net(batch) for name, net in loaded.networks.items()}
        for name, out in outs.items():
            up = F.interpolate(
                out.logits, size=batch.shape[-2:], mode="bilinear", align_corners=False
            )
            np.testing.assert_array_equal(result[f"prediction/{name}"], up[0].argmax(0).numpy())
            probs = torch.softmax(up[0, :, pixel[0], pixel[1]], dim=0).numpy()
            np.testing.assert_allclose(result[f"probabilities/{name}"], probs, rtol=1e-5, atol=1e-6)
            # 128 x 128 image -> 16 x 16 head map, one node per position; pixel // 8 is the node.
            node = (pixel[0] // 8, pixel[1] // 8)
            assert tuple(result[f"node/{name}"]) == node
            np.testing.assert_allclose(
                result[f"affinity/{name}"], _cosine_row(out.features["head"], node), atol=1e-5
            )
            score = loaded.critic(loaded.critic.prepare_input(out.logits), batch)
            assert result[f"score/{name}"] == pytest.approx(float(score[0]), rel=1e-5, abs=1e-6)
        for name in loaded.students:
            kl = _kl(outs[name].logits, outs[TEACHER].logits)
            np.testing.assert_allclose(result[f"kl/{name}"], kl, rtol=1e-4, atol=1e-6)
            assert result[f"kl_at_pixel/{name}"] == pytest.approx(
                kl[pixel[0] // 8, pixel[1] // 8], rel=1e-4, abs=1e-6
            )
            assert result[f"kl_mean/{name}"] == pytest.approx(kl.mean(), rel=1e-4)
            mse = np.mean((result[f"affinity/{name}"] - result[f"affinity/{TEACHER}"]) ** 2)
            assert result[f"affinity_mse/{name}"] == pytest.approx(mse)
            assert result[f"score_gap/{name}"] == pytest.approx(
                result[f"score/{name}"] - result[f"score/{TEACHER}"]
            )
    np.testing.assert_allclose(result["image"], item["image"].permute(1, 2, 0).numpy())
    np.testing.assert_array_equal(result["label"], item["label"].numpy())


# --------------------------------------------------------------------------------------------------
# Hand-computed cases, invariances, the cache
# --------------------------------------------------------------------------------------------------
def test_node_size_by_hand():
    assert node_size_for(16, 32, 4096) == 1
    assert node_size_for(16, 32, 511) == 2  # 8 x 16 = 128 nodes
    assert node_size_for(128, 256, 4096) == 3  # 43 x 86 = 3698 (beta 2: 64 x 128 = 8192)
    assert node_size_for(5, 5, 1) == 5
    with pytest.raises(ValueError, match="max_nodes"):
        node_size_for(4, 4, 0)


def test_probabilities_at_a_pixel_match_the_upsampled_map():
    generator = torch.Generator().manual_seed(3)
    logits = 4 * torch.randn(1, 5, 7, 9, generator=generator)  # (1, K, h, w)
    size = (30, 41)  # not a multiple of the map: fractional sampling positions
    full = torch.softmax(
        F.interpolate(logits, size=size, mode="bilinear", align_corners=False), dim=1
    )[0]
    for pixel in [(0, 0), (29, 40), (0, 40), (15, 17), (3, 38), (22, 1)]:
        np.testing.assert_allclose(
            probabilities_at(logits, pixel, size),
            full[:, pixel[0], pixel[1]].numpy(),
            rtol=1e-5,
            atol=1e-6,
        )


def test_corner_pixels_map_to_corner_nodes_and_coarser_graphs(random_models: ExplorerModels):
    first = explore(random_models, 0, (0, 0))
    last = explore(random_models, 0, (127, 127))
    assert tuple(first[f"node/{TEACHER}"]) == (0, 0) and tuple(last[f"node/{TEACHER}"]) == (15, 15)
    coarse = ExplorerModels(
        random_models.teacher, random_models.students, None, random_models.dataset, max_nodes=64
    )
    result = explore(coarse, 0, (127, 127))
    assert result[f"affinity/{TEACHER}"].shape == (8, 8) and tuple(result[f"node/{TEACHER}"]) == (
        7,
        7,
    )
    assert not any(key.startswith("score") for key in result)  # no critic, no scores


def test_invariances(random_models: ExplorerModels):
    result = explore(random_models, 1, (50, 70))
    for name in random_models.names:
        aff = result[f"affinity/{name}"]
        node = tuple(result[f"node/{name}"])
        assert aff[node] == pytest.approx(1.0, abs=1e-5)  # a node is its own best match
        assert np.all(np.abs(aff) <= 1 + 1e-5)
        assert result[f"probabilities/{name}"].sum() == pytest.approx(1.0, abs=1e-5)
    for name in random_models.students:
        assert np.all(result[f"kl/{name}"] >= -1e-6)
    # The teacher against itself: zero KL, zero affinity difference, zero score gap.
    itself = ExplorerModels(
        random_models.teacher,
        {"copy": random_models.teacher},
        random_models.critic,
        random_models.dataset,
    )
    same = explore(itself, 1, (50, 70))
    assert np.abs(same["kl/copy"]).max() < 1e-5
    assert same["affinity_mse/copy"] == 0.0 and same["score_gap/copy"] == 0.0


def test_moving_the_pixel_reuses_the_cached_outputs(random_models: ExplorerModels):
    calls = {"n": 0}

    def count(*_args) -> None:
        calls["n"] += 1

    models = ExplorerModels(
        random_models.teacher,
        random_models.students,
        random_models.critic,
        random_models.dataset,
        cache_size=1,
    )
    handle = models.teacher.register_forward_hook(count)
    try:
        a = explore(models, 0, (10, 10))
        b = explore(models, 0, (100, 20))
        assert calls["n"] == 1
        assert not np.array_equal(a[f"affinity/{TEACHER}"], b[f"affinity/{TEACHER}"])
        explore(models, 1, (10, 10))
        explore(models, 0, (10, 10))  # evicted by image 1 (cache_size=1): computed again
        assert calls["n"] == 3
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------------
def test_bad_queries_are_refused(random_models: ExplorerModels):
    with pytest.raises(ValueError, match=r"image_index.*\[0, 2\).*5"):
        explore(random_models, 5, (0, 0))
    with pytest.raises(ValueError, match=r"pixel.*128 x 128.*\(128, 0\)"):
        explore(random_models, 0, (128, 0))
    with pytest.raises(ValueError, match="pixel"):
        explore(random_models, 0, (1.5, 0))
    with pytest.raises(ValueError, match="reserved"):
        ExplorerModels(
            random_models.teacher, {TEACHER: random_models.teacher}, None, random_models.dataset
        )
    with pytest.raises(ValueError, match="students"):
        ExplorerModels(random_models.teacher, {}, None, random_models.dataset)


def test_bad_runs_trees_are_refused(runs_tree: Path, tmp_path: Path):
    tree = _tree(runs_tree)
    with pytest.raises(FileNotFoundError, match=r"index\.json"):
        _tree(tmp_path)
    with pytest.raises(ValueError, match="'missing' is not in the index"):
        load_explorer_models(tree, students={WITH_HO: ("missing", 0)})
    with pytest.raises(ValueError, match="seed 3"):
        load_explorer_models(tree, students={WITH_HO: ("pi_pa", 3)})
    with pytest.raises(ValueError, match="no critic"):
        load_explorer_models(tree, critic_run=("pi_pa", 0))
    # A teacher listed but not there: the folder is named relative to the project.
    index = {**tree.index, "teacher": {"run_dir": "gone"}}
    with pytest.raises(FileNotFoundError, match=r"teacher: no run folder.*runs/smoke/gone"):
        load_explorer_models(RunsTree(tree.profile_dir, index, tree.project_root))


# --------------------------------------------------------------------------------------------------
# Golden values (random weights from seed 0 on the generated data: catches silent drift)
# --------------------------------------------------------------------------------------------------
GOLDEN = {
    "kl_mean": 15.421418190002441,
    "kl_at_pixel": 83.56523895263672,
    "affinity_mse": 0.004755889996886253,
    "score_teacher": -0.046664219349622726,
    "score_gap": 0.0006355233490467072,
}


def test_golden_values(random_models: ExplorerModels):
    result = explore(random_models, 0, (64, 64))
    values = {
        "kl_mean": result[f"kl_mean/{WITHOUT_HO}"],
        "kl_at_pixel": result[f"kl_at_pixel/{WITH_HO}"],
        "affinity_mse": result[f"affinity_mse/{WITHOUT_HO}"],
        "score_teacher": result[f"score/{TEACHER}"],
        "score_gap": result[f"score_gap/{WITH_HO}"],
    }
    for key, value in values.items():
        assert math.isclose(value, GOLDEN[key], rel_tol=1e-4, abs_tol=1e-7), (
            key,
            value,
            GOLDEN[key],
        )

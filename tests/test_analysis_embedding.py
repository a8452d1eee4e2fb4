"""skdlib.analysis.embedding: Fig. 3 scores on a tiny real runs tree (1-iteration runs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skdlib.analysis.demo import make_demo_runs
from skdlib.analysis.embedding import (
    embedding_scores,
    load_fig3_models,
    predict_logits,
    train_fair_judge,
)
from skdlib.analysis.runs import RunsTree, experiment_table
from skdlib.data.transforms import normalize
from skdlib.models.discriminator import Discriminator

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for this module (restored after): the networks are tiny, and a shared 2-core
    machine runs them several times faster without oversubscribed threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def demo(tmp_path_factory, one_thread) -> Path:
    """Teacher, pi_pa/seed0 and pi_pa_ho/seed0, one iteration each, on 4 train / 3 val 128x128
    images."""
    return make_demo_runs(
        tmp_path_factory.mktemp("fig3"),
        ["pi_pa", "pi_pa_ho"],
        iters=1,
        repo=REPO,
        num_train=4,
        num_val=3,
    )


@pytest.fixture(scope="module")
def tree(demo) -> RunsTree:
    return RunsTree.read(demo, project_root=REPO, name="demo tree")


@pytest.fixture(scope="module")
def models(tree):
    return load_fig3_models(tree)


@pytest.fixture(scope="module")
def val_set(models):
    return models.val_set


def test_demo_tree_follows_the_contract(demo, tree):
    assert torch.get_num_threads() == 1  # make_demo_runs restored the module's setting
    index = tree.index
    assert index["teacher"]["run_dir"] == "teacher" and index["num_classes"] == 8
    assert [e["name"] for e in index["experiments"]] == ["pi_pa", "pi_pa_ho"]
    table = experiment_table(tree, "ablation")
    assert table["n_finished"].tolist() == [1, 1]
    for run in ("teacher", "pi_pa/seed0", "pi_pa_ho/seed0"):
        assert (demo / run / "summary.json").is_file() and (
            demo / run / "checkpoints" / "final.pt"
        ).is_file()


def test_models_are_built_from_the_run_folders(models, demo):
    assert set(models.students) == {"w/o HO", "w/ HO"}
    assert models.num_classes == 8 and models.critic_config.distill.holistic
    assert models.sources["critic"] == "demo tree/pi_pa_ho/seed0/checkpoints/last.pt (iteration 1)"
    assert models.sources["teacher"] == "demo tree/teacher" and len(models.train_set) == 4
    weights = torch.load(demo / "pi_pa_ho/seed0/checkpoints/final.pt", weights_only=True)
    for key, value in models.students["w/ HO"].state_dict().items():
        assert torch.equal(value, weights[key]), key
    # The two students differ (different losses), the critic is the trained one, not a fresh one.
    a, b = (models.students[k].state_dict() for k in ("w/o HO", "w/ HO"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    last = torch.load(demo / "pi_pa_ho/seed0/checkpoints/last.pt", weights_only=True)
    for key, value in models.critic.state_dict().items():
        assert torch.equal(value, last["critic"][key]), key


def test_scores_one_row_per_image_and_deterministic(models, val_set):
    table = embedding_scores(models.critic, models.teacher, models.students, val_set, batch_size=2)
    assert len(table) == len(val_set) == 3
    assert list(table.columns) == [
        "index",
        "name",
        "teacher",
        "w/o HO",
        "w/ HO",
        "diff/w/o HO",
        "diff/w/ HO",
    ]
    assert table["index"].tolist() == [0, 1, 2]
    assert (table["diff/w/ HO"] == table["w/ HO"] - table["teacher"]).all()
    again = embedding_scores(models.critic, models.teacher, models.students, val_set, batch_size=1)
    for column in ("teacher", "w/o HO", "w/ HO"):
        assert again[column].tolist() == pytest.approx(table[column].tolist(), abs=1e-5)
    # Modes restored (the loaded models are in eval mode; a training module stays training).
    models.critic.train()
    embedding_scores(models.critic, models.teacher, {"s": models.students["w/ HO"]}, val_set)
    assert models.critic.training and not models.teacher.training
    models.critic.eval()


def test_scores_parity_with_a_plain_rederivation(models, val_set):
    table = embedding_scores(models.critic, models.teacher, models.students, val_set, batch_size=3)
    image = normalize(
        torch.stack([val_set[i]["image"] for i in range(len(val_set))])
    )  # (3, 3, H, W)
    with torch.no_grad():
        for column, net in (("teacher", models.teacher), ("w/ HO", models.students["w/ HO"])):
            probs = torch.softmax(
                net(image).logits, dim=1
            )  # (3, K, H/8, W/8): the paper's critic input
            expected = models.critic(probs, image)  # (3,)
            assert table[column].tolist() == pytest.approx(expected.tolist(), abs=1e-5)


def test_logits_critic_takes_raw_logits(models, val_set):
    torch.manual_seed(0)
    critic = Discriminator(
        8, widths=(4, 4, 4, 4), use_image=False, input="logits", input_batchnorm=True
    ).eval()
    table = embedding_scores(critic, models.teacher, {"s": models.students["w/o HO"]}, val_set)
    image = normalize(val_set[0]["image"][None])  # (1, 3, H, W)
    with torch.no_grad():
        expected = critic(models.teacher(image).logits, None)
    assert table.loc[0, "teacher"] == pytest.approx(float(expected[0]), abs=1e-5)


def test_predict_logits_shapes(models, val_set):
    out = predict_logits({"teacher": models.teacher}, val_set[0]["image"])
    assert out["teacher"].shape == (8, 16, 16)
    with pytest.raises(ValueError, match="image"):
        predict_logits({"teacher": models.teacher}, val_set[0]["image"][None])


def test_refusals(models, val_set, tree):
    with pytest.raises(ValueError, match="students"):
        embedding_scores(models.critic, models.teacher, {}, val_set)
    with pytest.raises(ValueError, match="teacher"):
        embedding_scores(models.critic, models.teacher, {"teacher": models.teacher}, val_set)
    with pytest.raises(ValueError, match="batch_size"):
        embedding_scores(models.critic, models.teacher, models.students, val_set, batch_size=0)
    with pytest.raises(ValueError, match="critic"):
        load_fig3_models(tree, with_ho="pi_pa")  # no holistic term: no critic in last.pt
    with pytest.raises(ValueError, match="experiment"):
        load_fig3_models(tree, without_ho="nope")
    with pytest.raises(ValueError, match="seed"):
        load_fig3_models(tree, seed=7)


def _train_set(models):
    return models.train_set


def test_fair_judge_is_deterministic_and_leaves_the_networks_alone(models):
    train_set = _train_set(models)
    before = {k: v.clone() for k, v in models.students["w/ HO"].state_dict().items()}
    first = train_fair_judge(
        models.critic_config, models.teacher, models.students, train_set, iters=3, batch_size=2
    )
    second = train_fair_judge(
        models.critic_config, models.teacher, models.students, train_set, iters=3, batch_size=2
    )
    assert not first.critic.training and list(first.history["iter"]) == [1, 2, 3]
    for key, value in first.critic.state_dict().items():
        assert torch.equal(value, second.critic.state_dict()[key]), key
    after = models.students["w/ HO"].state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # A fresh critic of the trained one's architecture, not the trained one.
    assert type(first.critic) is type(models.critic)
    assert any(
        not torch.equal(v, models.critic.state_dict()[k])
        for k, v in first.critic.state_dict().items()
    )


class _Maps(torch.nn.Module):
    """A stand-in network: confident logits of a class that depends on the image's mean
    brightness (``sharp``), or flat logits; 1/8 of the input's size."""

    def __init__(self, num_classes: int, *, sharp: bool) -> None:
        super().__init__()
        self.num_classes, self.sharp = num_classes, sharp

    def forward(self, image: torch.Tensor):
        from skdlib.models.outputs import SegmentationOutput

        n, _, h, w = image.shape
        logits = torch.zeros(n, self.num_classes, h // 8, w // 8)
        if self.sharp:
            cls = (image.mean(dim=(1, 2, 3)) > 0).long()  # (N,)
            logits[torch.arange(n), cls] = 6.0
        return SegmentationOutput(logits=logits, aux_logits=None, features={})


def test_fair_judge_learns_to_tell_the_teacher_from_the_students(models):
    """With a teacher of confident maps and students of flat ones, a few dozen steps make the judge
    score the teacher's maps above the students' on the training images."""
    import dataclasses

    cfg = models.critic_config
    cfg = dataclasses.replace(
        cfg, distill=dataclasses.replace(cfg.distill, disc_optimizer="adam", disc_lr=1e-3)
    )
    k = models.num_classes
    history = train_fair_judge(
        cfg,
        _Maps(k, sharp=True),
        {"a": _Maps(k, sharp=False), "b": _Maps(k, sharp=False)},
        _train_set(models),
        iters=30,
        batch_size=2,
    ).history
    gap = history["score_teacher"] - history["score_student"]
    assert gap.iloc[-5:].mean() > gap.iloc[:3].mean() + 0.05 and gap.iloc[-5:].mean() > 0


def test_fair_judge_refusals(models):
    with pytest.raises(ValueError, match="iters"):
        train_fair_judge(models.critic_config, models.teacher, models.students, [], iters=0)
    with pytest.raises(ValueError, match="student"):
        train_fair_judge(models.critic_config, models.teacher, {}, _train_set(models), iters=1)

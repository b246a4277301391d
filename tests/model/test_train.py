import copy

import numpy as np
import pandas as pd
import pytest
import torch

from model import report
from model import train as training
from model.calibrate import choose_threshold
from model.checkpoint import ModelFileError, load_trained
from model.front_end import compute_front_end
from model.losses import MultimodalLoss, class_alpha
from model.network import build_model
from model.predict import model_inputs, predict
from model.report import train_and_report
from model.train import LearningRate, _weight_average, train_model


@pytest.fixture
def smoke_cfg(smoke_prepared):
    """A private copy of the smoke config (tests may change it) and the prepared data."""
    cfg, data = smoke_prepared
    return copy.deepcopy(cfg), data


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_both_kinds_train_and_leave_a_usable_model(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    for kind, epochs in (("multimodal", 3), ("baseline", 2)):
        result = train_model(kind, data, cfg, tmp_path / kind, progress=False)
        history = pd.read_csv(tmp_path / kind / "history.csv")
        assert len(history) == epochs
        assert history["stage"].tolist()[-1] == 2
        assert np.isfinite(history["train_loss"]).all()
        assert 0.0 <= result.operating_point.threshold <= 1.0
        model, loaded_cfg, point = load_trained(tmp_path / kind / "model.pt")
        assert point == result.operating_point
        assert loaded_cfg.to_dict() == cfg.to_dict()
        for a, b in zip(model.state_dict().values(), result.model.state_dict().values()):
            assert torch.equal(a.cpu(), b.cpu())


def test_an_fpr_budget_sets_the_saved_threshold_from_the_best_weights(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    cfg.train.fpr_budget, cfg.train.process_shuffle = 0.95, 0.5  # the tiny model flags many
    result = train_model("multimodal", data, cfg, tmp_path, progress=False)
    out = predict(result.model.eval(), data.datasets["val"])
    expected = choose_threshold(out["probs"], out["labels"], cfg.train.escape_target, 0.95)
    point = result.operating_point
    assert point.threshold == pytest.approx(expected.threshold, abs=1e-5)
    kept = pd.read_csv(tmp_path / "history.csv").loc[result.best_epoch]
    assert point.threshold < kept["threshold"]  # lowered, within the budget
    assert kept["val_fpr"] < point.val_fpr <= 0.95 and point.fpr_budget == 0.95
    assert load_trained(tmp_path / "model.pt")[2] == result.operating_point


def test_stage_one_trains_alignment_only_with_the_head_frozen(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    result = train_model("multimodal", data, cfg, tmp_path, progress=False, max_epochs=1)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["stage"].tolist() == [1]
    assert "train_focal" not in history.columns
    assert all(not p.requires_grad for p in result.model.head_parameters())
    assert result.operating_point is None  # unfinished: no model.pt yet
    assert not (tmp_path / "model.pt").exists()


def test_loss_falls_on_tiny_data(smoke_cfg):
    cfg, data = smoke_cfg
    torch.manual_seed(0)
    model = build_model(cfg.model, "multimodal")
    train = data.datasets["train"]
    batch = train.__getitems__(list(range(64)))
    loss_fn = MultimodalLoss(class_alpha(train.labels.numpy(), 5), lambda_process=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(40):
        logits, aux = model(**model_inputs(batch, torch.device("cpu")))
        loss, parts = loss_fn(logits, batch["label"], aux, stage=2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts["focal"])
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5])


def test_resume_reproduces_an_uninterrupted_run(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    straight = train_model("multimodal", data, cfg, tmp_path / "a", progress=False)
    train_model("multimodal", data, cfg, tmp_path / "b", progress=False, max_epochs=2)
    resumed = train_model("multimodal", data, cfg, tmp_path / "b", progress=False)
    assert len(resumed.history) == len(straight.history)
    for (name, a), b in zip(_weights(straight.model).items(), _weights(resumed.model).values()):
        assert torch.equal(a, b), name
    assert resumed.operating_point == straight.operating_point


def test_stage_two_validates_and_keeps_the_moving_average_of_the_weights(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    cfg.train.stage2_epochs = 1  # the kept epoch is the last one
    train_model("multimodal", data, cfg, tmp_path, progress=False)
    saved = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    kept = torch.load(tmp_path / "best.pt", weights_only=True)
    averaged = {k.removeprefix("module."): v for k, v in saved["average"].items()}
    assert saved["average"]["n_averaged"] == 4  # one update per stage-2 step
    moved = [
        k
        for k, v in kept.items()
        if v.is_floating_point() and not torch.equal(v, saved["model"][k])
    ]
    assert moved  # the kept weights are not the last raw weights...
    for k, v in kept.items():
        assert torch.equal(v, averaged[k]), k  # ...but their average


def _validation_fprs(monkeypatch, fprs, losses=None):
    """Make each validation (stage 1's included) report the next of `fprs` as its FPR, and
    the next of `losses` as its loss (default: always 1, no progress there)."""
    real, figures = training._Epochs._validate, iter(fprs)
    losses = iter(losses) if losses is not None else None

    def validate(self, model):
        loss = 1.0 if losses is None else next(losses)
        return real(self, model) | {"val_fpr": next(figures), "val_escape": 0.0, "val_loss": loss}

    monkeypatch.setattr(training._Epochs, "_validate", validate)


def test_training_stops_patience_epochs_after_the_best_and_cuts_the_rate_on_plateaus(
    smoke_cfg, tmp_path, monkeypatch
):
    cfg, data = smoke_cfg
    t = cfg.train
    t.stage2_epochs, t.patience, t.lr_patience, t.lr_decay = 20, 4, 2, 0.5
    _validation_fprs(monkeypatch, [1.0, 0.5, 0.4, 0.6, 0.7, 0.8, 0.9] + [1.0] * 20)
    result = train_model("multimodal", data, cfg, tmp_path, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    assert history["stage"].tolist() == [1] + [2] * 6  # the best, then `patience` more
    assert result.best_epoch == 2
    assert history["lr_cut"].tolist() == [False, False, False, False, True, False, False]
    main_lr = history["lr"].tolist()
    assert main_lr[5] == pytest.approx(0.5 * main_lr[3])  # the cut holds from the next epoch
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    for k, v in result.model.state_dict().items():
        assert torch.equal(v, best[k]), k


def test_gains_below_min_delta_keep_the_best_but_do_not_count_as_progress(
    smoke_cfg, tmp_path, monkeypatch
):
    cfg, data = smoke_cfg
    t = cfg.train
    t.stage2_epochs, t.patience, t.lr_patience, t.min_delta = 20, 3, 2, 0.01
    _validation_fprs(monkeypatch, [1.0, 0.5, 0.495, 0.492, 0.3, 0.3, 0.3, 0.3] + [0.3] * 20)
    result = train_model("multimodal", data, cfg, tmp_path, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) == 8  # progress at epoch 4, then `patience` epochs without
    assert result.best_epoch == 4
    assert history.loc[history["lr_cut"], "epoch"].tolist() == [3, 6]


@pytest.mark.parametrize("learning", [True, False])
def test_while_most_good_dies_are_flagged_a_falling_validation_loss_is_progress(
    smoke_cfg, tmp_path, monkeypatch, learning
):
    cfg, data = smoke_cfg
    t = cfg.train
    t.stage2_epochs, t.patience, t.lr_patience = 20, 3, 2
    fprs = [1.0, 0.98, 0.981, 0.989, 0.98, 0.985, 0.2, 0.2, 0.2, 0.2] + [0.2] * 20
    losses = [0.5, 0.40, 0.38, 0.36, 0.35, 0.34, 0.30, 0.29, 0.28, 0.27] + [0.2] * 20
    _validation_fprs(monkeypatch, fprs, losses if learning else [0.5] * 30)
    result = train_model("multimodal", data, cfg, tmp_path, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    if learning:  # saturated but learning until epoch 6, then below SATURATED_FPR: FPR alone
        assert result.best_epoch == 6 and len(history) == 10
        assert not history["lr_cut"][:7].any()
    else:  # nothing moves: stopped `patience` epochs after epoch 1, the rate cut on the way
        assert len(history) == 5 and history["lr_cut"].tolist()[3]


def test_a_plateau_sends_training_back_to_the_best_weights(smoke_cfg, tmp_path, monkeypatch):
    cfg, data = smoke_cfg
    t = cfg.train
    t.stage2_epochs, t.patience, t.lr_patience = 4, 10, 2
    _validation_fprs(monkeypatch, [1.0, 0.1, 0.5, 0.5, 0.5])
    restarts = []
    real = training._back_to_best

    def back_to_best(folder, model, average, scheduler, decay):
        real(folder, model, average, scheduler, decay)
        restarts.append({k: v.clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(training, "_back_to_best", back_to_best)
    train_model("multimodal", data, cfg, tmp_path, progress=False)
    best = torch.load(tmp_path / "best.pt", weights_only=True)  # stage 2's first epoch
    assert len(restarts) == 1
    for k, v in restarts[0].items():
        assert torch.equal(v, best[k]), k


def test_the_learning_rate_warms_up_in_stage_two_and_scales():
    rate = LearningRate([1, 2, 2], steps=10)  # stage 2 starts at step 10; warm-up 5 steps
    assert [rate(s) for s in (0, 9, 10, 12, 14, 29)] == [1.0, 1.0, 0.2, 0.6, 1.0, 1.0]
    rate.scale = 0.3
    assert rate(29) == pytest.approx(0.3)
    assert rate(10) == pytest.approx(0.06)


def test_the_moving_average_warms_up_then_decays_at_its_horizon():
    model = torch.nn.Linear(1, 1, bias=False)
    average = _weight_average(model, epochs=1.0, steps=20)  # decay 0.95 once warmed up
    expected = None
    for n in range(250):  # the cap binds from n = 171 on
        with torch.no_grad():
            model.weight.fill_(float(n))
        average.update_parameters(model)
        decay = min(0.95, (1 + n) / (10 + n))  # n updates averaged before this one
        expected = float(n) if expected is None else decay * expected + (1 - decay) * n
        assert average.module.weight.item() == pytest.approx(expected, rel=1e-5), n
    assert _weight_average(model, epochs=0, steps=20) is None


def test_a_checkpoint_of_another_config_is_not_resumed(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    train_model("multimodal", data, cfg, tmp_path, progress=False, max_epochs=2)
    cfg2 = copy.deepcopy(cfg)
    cfg2.train.lr = cfg.train.lr / 2
    result = train_model("multimodal", data, cfg2, tmp_path, progress=False)
    assert [row["epoch"] for row in result.history] == [0, 1, 2]


def test_train_and_report_scores_test_with_and_without_notes(smoke_cfg):
    cfg, _ = smoke_cfg
    summary = train_and_report(cfg, ("multimodal",), progress=False)
    test = summary["multimodal"]["test"]
    assert test["n"] == 120
    assert {"escape", "fpr", "macro_f1", "accuracy"} <= set(test)
    assert summary["multimodal"]["test_no_notes"]["n"] == 120


def test_an_image_only_model_is_scored_once(smoke_cfg, tmp_path, scoring_passes):
    cfg, data = smoke_cfg
    result = train_model("baseline", data, cfg, tmp_path, progress=False)
    summary = report.score(result, data)
    assert [p["with_notes"] for p in scoring_passes] == [True]  # notes cannot change what it sees
    assert summary["test_no_notes"] == summary["test"]


@pytest.mark.parametrize("content", [b"", b"not a model", None])
def test_a_corrupt_or_foreign_model_file_is_refused(tmp_path, content):
    path = tmp_path / "model.pt"
    if content is None:
        torch.save({"kind": "multimodal"}, path)  # a torch file that is not a dieguard model
    else:
        path.write_bytes(content)
    with pytest.raises(ModelFileError, match="not a usable dieguard model"):
        load_trained(path)


def test_a_cached_front_end_trains_and_validates_as_the_images_would(smoke_cfg, tmp_path):
    cfg, data = smoke_cfg
    cfg.train.front_end_views = 2
    result = train_model("multimodal", data, cfg, tmp_path, progress=False)
    history = pd.read_csv(tmp_path / "history.csv")
    assert len(history) == 3 and np.isfinite(history["train_loss"]).all()
    model = result.model.eval()
    val = data.datasets["val"]
    cached = compute_front_end(model.image_encoder, val, 16, torch.device("cpu"))
    assert len(cached) == len(val)
    batch = val.__getitems__([5, 0, 3])
    a, _ = model(**model_inputs(batch, torch.device("cpu")))
    b, _ = model(**model_inputs(cached.__getitems__([3, 5, 0]), torch.device("cpu")))
    torch.testing.assert_close(a, b)
    on_images, on_cache = predict(model, val), predict(model, cached)
    np.testing.assert_allclose(on_images["probs"], on_cache["probs"], atol=1e-5)
    kept = pd.read_csv(tmp_path / "history.csv").loc[result.best_epoch]
    point = choose_threshold(on_images["probs"], on_images["labels"], cfg.train.escape_target)
    assert point.threshold == pytest.approx(kept["threshold"], abs=1e-5)
    views = compute_front_end(model.image_encoder, val, 16, torch.device("cpu"), views=2)
    first, second, third = (views.view(i).__getitems__([0, 1]) for i in range(3))
    assert not torch.equal(first["front_end"][0], second["front_end"][0])  # augmented views
    assert torch.equal(first["front_end"][0], third["front_end"][0])  # epoch e: view e mod n

"""Scoring once: the steps of a run that read a model's figures on the same dies share a pass."""

from __future__ import annotations

import copy

import numpy as np
import torch

from model.evaluation_job import run_evaluation
from model.predict import predict_once
from model.report import score


def test_the_evaluation_reuses_the_test_pass_training_made(
    smoke_multimodal, smoke_prepared, scoring_passes, tmp_path
):
    _, data = smoke_prepared
    figures = score(smoke_multimodal, data)
    assert len(scoring_passes) == 2  # with and without notes
    report = run_evaluation(smoke_multimodal.folder / "model.pt", tmp_path / "evaluation")
    assert len(scoring_passes) == 2  # the saved model on the split prepared again: the same key
    assert report["escape"] == figures["test"]["escape"]
    assert report["fpr"] == figures["test"]["fpr"]


def test_other_weights_or_other_dies_are_scored_again(
    smoke_multimodal, smoke_prepared, scoring_passes
):
    _, data = smoke_prepared
    model, test = smoke_multimodal.model, data.datasets["test"]
    first = predict_once(model, test)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        next(changed.parameters()).add_(0.5)
    predict_once(changed, test)
    predict_once(model, data.datasets["val"])
    assert len(scoring_passes) == 3
    again = predict_once(model, test)
    assert len(scoring_passes) == 3
    np.testing.assert_array_equal(again["probs"], first["probs"])


def test_a_caller_that_writes_to_its_scores_leaves_the_next_callers_alone(
    smoke_multimodal, smoke_prepared, scoring_passes
):
    _, data = smoke_prepared
    first = predict_once(smoke_multimodal.model, data.datasets["test"])
    kept = first["probs"].copy()
    first["probs"][:] = 0
    np.testing.assert_array_equal(
        predict_once(smoke_multimodal.model, data.datasets["test"])["probs"], kept
    )

"""A run's scaler and tokenizer are fitted once and read back, never refitted behind its back."""

from __future__ import annotations

import copy
import json

from model import prepare as prepare_module
from model.prepare import FITTED_FILE, TOKENIZER_FILE, prepare


def test_a_second_prepare_reads_the_saved_tokenizer_and_a_new_vocabulary_refits(
    smoke_prepared, tmp_path, monkeypatch
):
    cfg, _ = smoke_prepared
    first = prepare(cfg, tmp_path, splits=("train",))
    saved = (tmp_path / TOKENIZER_FILE).read_text()
    assert json.loads((tmp_path / FITTED_FILE).read_text())["vocab_size"] == cfg.model.vocab_size

    def no_fit(*args, **kwargs):
        raise AssertionError("the saved tokenizer was fitted again")

    monkeypatch.setattr(prepare_module, "train_note_tokenizer", no_fit)
    again = prepare(cfg, tmp_path, splits=("train",))
    assert (tmp_path / TOKENIZER_FILE).read_text() == saved
    assert again.tokenizer.get_vocab() == first.tokenizer.get_vocab()
    assert (again.datasets["train"].note_ids == first.datasets["train"].note_ids).all()

    monkeypatch.undo()
    other = copy.deepcopy(cfg)
    other.model.vocab_size = cfg.model.vocab_size // 2
    prepare(other, tmp_path, splits=("train",))
    assert json.loads((tmp_path / FITTED_FILE).read_text())["vocab_size"] == other.model.vocab_size

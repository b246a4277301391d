"""The operator-note tokenizer: bounded vocabulary, 0-padded ids with a mask, save and load."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from model.synthetic.notes import BY_CLASS, MISLEADING_NOTES, ROUTINE
from model.tokenizer import (
    MAX_VOCAB,
    PAD,
    UNK,
    encode_notes,
    load_tokenizer,
    save_tokenizer,
    train_note_tokenizer,
)

NOTES = [
    *ROUTINE,
    *(t.format(loc="near the edge", zone=3) for texts in BY_CLASS.values() for t in texts),
    *(t.format(loc="at center") for t in MISLEADING_NOTES),
    "",
    "",
]


@pytest.fixture(scope="module")
def tokenizer():
    return train_note_tokenizer(NOTES, vocab_size=120)


def test_vocabulary_is_bounded(tokenizer):
    vocab = tokenizer.get_vocab()
    assert len(vocab) <= 120
    assert vocab[PAD] == 0
    assert UNK in vocab
    small = train_note_tokenizer(NOTES, vocab_size=60)
    assert small.get_vocab_size() <= 60


@pytest.mark.parametrize("size", [0, 1, -5, MAX_VOCAB + 1, 50_000])
def test_vocabulary_size_out_of_range_is_rejected(size):
    with pytest.raises(ValueError, match="vocab_size"):
        train_note_tokenizer(NOTES, vocab_size=size)


def test_max_vocabulary_is_accepted():
    tok = train_note_tokenizer(NOTES[:5], vocab_size=MAX_VOCAB)
    assert tok.get_vocab_size() <= MAX_VOCAB


def test_encoding_is_zero_padded_with_mask(tokenizer):
    notes = ["particles observed near the edge", "", "Nominal run"]
    ids, mask = encode_notes(tokenizer, notes, max_len=16)
    assert ids.shape == (3, 16) and mask.shape == (3, 16)
    assert ids.dtype == np.int64 and mask.dtype == np.bool_
    assert np.array_equal(mask, ids != 0)
    for row, m in zip(ids, mask):
        n = int(m.sum())
        assert m[:n].all() and not m[n:].any()  # real tokens first, then padding
        assert (row[n:] == 0).all()
    assert mask[0].sum() >= 5
    assert not mask[1].any()  # a die without a note
    assert (ids[1] == 0).all()
    assert mask[2].sum() >= 2


def test_lower_casing(tokenizer):
    upper, _ = encode_notes(tokenizer, ["NOMINAL RUN"], 8)
    lower, _ = encode_notes(tokenizer, ["nominal run"], 8)
    assert np.array_equal(upper, lower)


def test_unknown_words_still_count_as_tokens(tokenizer):
    ids, mask = encode_notes(tokenizer, ["ünïcødé ✓"], 8)
    assert mask[0].any()


def test_long_note_is_truncated(tokenizer):
    long_note = " ".join(["vibration spike during CMP step"] * 40)
    full = tokenizer.encode(long_note).ids
    assert len(full) > 12
    ids, mask = encode_notes(tokenizer, [long_note, "routine check ok"], max_len=12)
    assert ids.shape == (2, 12)
    assert mask[0].all()
    assert ids[0].tolist() == full[:12]


def test_all_empty_batch(tokenizer):
    ids, mask = encode_notes(tokenizer, ["", ""], 5)
    assert not mask.any() and not ids.any()
    ids, mask = encode_notes(tokenizer, [], 5)
    assert ids.shape == (0, 5) and mask.shape == (0, 5)


def test_save_and_load_give_identical_encodings(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    save_tokenizer(tokenizer, path)
    loaded = load_tokenizer(path)
    assert loaded.get_vocab() == tokenizer.get_vocab()
    batch = [*NOTES, "new MES form, lot split", "tempreature alram zone 7"]
    ids, mask = encode_notes(tokenizer, batch, 24)
    ids2, mask2 = encode_notes(loaded, batch, 24)
    assert np.array_equal(ids, ids2)
    assert np.array_equal(mask, mask2)


def test_training_on_generated_notes(tiny_data):
    notes = list(json.loads((tiny_data / "train" / "operator_notes.json").read_text()).values())
    tok = train_note_tokenizer(notes, vocab_size=300)
    assert tok.get_vocab_size() <= 300
    ids, mask = encode_notes(tok, notes, 32)
    assert mask.any(axis=1).all()
    # Training notes are covered by the vocabulary: no unknown token.
    assert not (ids == tok.token_to_id(UNK)).any()


def test_the_same_notes_give_the_same_vocabulary_in_every_process():
    script = (
        "import json; from tests.model.test_tokenizer import NOTES; "
        "from model.tokenizer import train_note_tokenizer; "
        "print(json.dumps(train_note_tokenizer(NOTES, 120).get_vocab(), sort_keys=True))"
    )
    vocabs = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(vocabs) == 1
    assert json.loads(vocabs.pop()) == train_note_tokenizer(NOTES, 120).get_vocab()


def test_a_word_outside_the_vocabulary_is_split_into_known_pieces(tokenizer):
    pieces = tokenizer.encode("particlesx").tokens
    assert len(pieces) > 1 and UNK not in pieces
    assert all(p.startswith("##") for p in pieces[1:])

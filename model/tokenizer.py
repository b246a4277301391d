"""The operator-note tokenizer: WordPiece trained on the training notes, saved with the run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

PAD, UNK = "[PAD]", "[UNK]"  # PAD has id 0, the padding id the note encoder expects
MAX_VOCAB = 10_000


def train_note_tokenizer(notes: list[str], vocab_size: int = 2000) -> Tokenizer:
    """Train a lower-casing WordPiece tokenizer on non-empty notes.

    Args:
        notes: training notes ("" entries are ignored).
        vocab_size: at most 10,000.
    """
    if not 0 < vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in 1..{MAX_VOCAB}, got {vocab_size}")
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=[PAD, UNK])
    tokenizer.train_from_iterator([n for n in notes if n], trainer=trainer)
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    tokenizer.save(str(path))


def load_tokenizer(path: str | Path) -> Tokenizer:
    return Tokenizer.from_file(str(path))


def encode_notes(
    tokenizer: Tokenizer, notes: list[str], max_len: int
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and mask for a batch of notes.

    Returns:
        ids int64 (N, max_len), 0-padded; mask bool (N, max_len), True on real tokens.
        A die without a note has an all-False mask row.
    """
    ids = np.zeros((len(notes), max_len), np.int64)
    for i, encoding in enumerate(tokenizer.encode_batch([n or "" for n in notes])):
        row = encoding.ids[:max_len]
        ids[i, : len(row)] = row
    return ids, ids != 0

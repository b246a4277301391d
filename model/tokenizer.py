"""The operator-note tokenizer: a WordPiece vocabulary built from the training notes, saved
with the run. Built by counting, not by the `tokenizers` trainer (whose merges depend on hash
order, so the same notes gave a different vocabulary in each process): the same notes always
give the same ids, and so the same model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

PAD, UNK = "[PAD]", "[UNK]"  # PAD has id 0, the padding id the note encoder expects
MAX_VOCAB = 10_000
CONTINUE = "##"  # WordPiece's prefix of a piece inside a word


def train_note_tokenizer(notes: list[str], vocab_size: int = 2000) -> Tokenizer:
    """A lower-casing WordPiece tokenizer over non-empty notes.

    The vocabulary holds, in this order until `vocab_size`: PAD and UNK, every character seen
    (alone and as a continuation, most frequent first), then whole words, most frequent first
    (ties alphabetical). A word outside it is split into its longest known pieces.

    Args:
        notes: training notes ("" entries are ignored).
        vocab_size: 2 to 10,000.
    """
    if not 2 <= vocab_size <= MAX_VOCAB:
        raise ValueError(f"vocab_size must be in 2..{MAX_VOCAB}, got {vocab_size}")
    normalizer = normalizers.BertNormalizer(lowercase=True)
    splitter = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for note in notes:
        if note:
            words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(note)))
    chars: Counter[str] = Counter()
    for word, n in words.items():
        for c in word:
            chars[c] += n

    def ranked(counts: Counter[str]) -> list[str]:
        return [k for k, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]

    alphabet = ranked(chars)
    tokens = [PAD, UNK, *alphabet, *(CONTINUE + c for c in alphabet)]
    tokens += [w for w in ranked(words) if len(w) > 1]
    vocab = {token: i for i, token in enumerate(tokens[:vocab_size])}
    tokenizer = Tokenizer(
        models.WordPiece(vocab, unk_token=UNK, continuing_subword_prefix=CONTINUE)
    )
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = splitter
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

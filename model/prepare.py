"""Prepare a data set for training: decode once, fit z-scores and the note tokenizer on train."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer

from model import distributed as ddp
from model.batches import DieDataset
from model.cache import split_digest
from model.config import RunConfig
from model.contract import read_split
from model.data import DieSplit, ProcessScaler, load_split
from model.tokenizer import encode_notes, load_tokenizer, save_tokenizer, train_note_tokenizer

SCALER_FILE = "scaler.json"
TOKENIZER_FILE = "tokenizer.json"
FITTED_FILE = "fitted_on.json"  # what the scaler and tokenizer beside it were fitted on


@dataclass
class Prepared:
    """Everything a training or evaluation run reads, fitted on the training split."""

    splits: dict[str, DieSplit]
    datasets: dict[str, DieDataset]
    scaler: ProcessScaler
    tokenizer: Tokenizer
    folder: Path  # where the scaler and tokenizer are saved

    @property
    def digest(self) -> str:
        """Content digest of all loaded splits together."""
        joined = ",".join(f"{name}:{part.digest}" for name, part in sorted(self.splits.items()))
        return hashlib.blake2b(joined.encode(), digest_size=16).hexdigest()


def prepare(cfg: RunConfig, folder: str | Path, splits=("train", "val", "test")) -> Prepared:
    """Load the splits from the cache (decoding once); fit the scaler and tokenizer on train.

    Args:
        cfg: the run's configuration (data_dir, image size, cache, vocabulary).
        folder: where scaler.json and tokenizer.json are written.
        splits: which splits to load; "train" is always read to fit the statistics.

    Under torchrun rank 0 fits and writes the scaler and tokenizer and hands them to the
    other ranks (tokenizer training is not reproducible from one process to the next), and
    decodes any missing cache before the other ranks read it.
    """
    folder = Path(folder)
    scaler, tokenizer = ddp.from_main(_fit, cfg, folder)  # under torchrun: rank 0's, for all
    with ddp.main_first():  # rank 0 decodes into the cache, the other ranks then read it
        loaded = {
            s: load_split(cfg.data_dir, s, cfg.model.img_size, cfg.data.cache_dir, scaler)
            for s in splits
        }
    L = cfg.model.max_note_len
    datasets = {s: encode_split(part, tokenizer, L) for s, part in loaded.items()}
    return Prepared(loaded, datasets, scaler, tokenizer, folder)


def encode_split(part: DieSplit, tokenizer: Tokenizer, max_note_len: int) -> DieDataset:
    """A DieDataset of one split with its notes tokenized."""
    ids, mask = encode_notes(tokenizer, part.notes, max_note_len)
    return DieDataset(part, ids, mask)


def trained_with(model_path: str | Path) -> Path:
    """The `prepared/` folder of the run that wrote `model_path` (beside the model's folder)."""
    return Path(model_path).resolve().parent.parent / "prepared"


def _fit(cfg: RunConfig, folder: Path) -> tuple[ProcessScaler, Tokenizer]:
    """The scaler and tokenizer fitted on the training split, reused from `folder` when they
    were fitted there on the same split and vocabulary size.

    The tokenizer's trainer breaks ties between equally frequent merges differently from one
    process to the next, so a resumed run or a later export must read the saved one, never
    fit its own.
    """
    train = read_split(Path(cfg.data_dir) / "train")
    fitted_on = {"train_digest": split_digest(train), "vocab_size": cfg.model.vocab_size}
    files = [folder / name for name in (SCALER_FILE, TOKENIZER_FILE, FITTED_FILE)]
    if all(f.exists() for f in files) and json.loads(files[2].read_text()) == fitted_on:
        return ProcessScaler.load(files[0]), load_tokenizer(files[1])
    scaler = ProcessScaler.fit(train.process)
    tokenizer = train_note_tokenizer(train.notes, cfg.model.vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    scaler.save(files[0])
    save_tokenizer(tokenizer, files[1])
    files[2].write_text(json.dumps(fitted_on))
    return scaler, tokenizer

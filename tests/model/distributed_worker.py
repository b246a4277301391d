"""One rank of the two-process DDP run that test_distributed.py starts with torchrun.

    python -m torch.distributed.run --nproc_per_node 2 --standalone \
        tests/model/distributed_worker.py OUT data_dir=... data.cache_dir=...

Each rank is given its own folders under OUT (rank0/, rank1/), so that anything a
non-main rank wrote would show; it writes only OUT/report<rank>.json, for the test.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from model import distributed as ddp
from model.batches import die_loader
from model.config import load_config
from model.prepare import prepare
from model.train import main, train_model

CONFIG = "configs/smoke.yaml"


def checksum(model: nn.Module) -> str:
    """Digest of every parameter and buffer, bit for bit."""
    h = hashlib.blake2b(digest_size=16)
    for name, value in model.state_dict().items():
        h.update(name.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def run(out: Path, overrides: list[str]) -> None:
    ddp.setup(torch.device("cpu"))
    rank, cfg = ddp.rank(), load_config(CONFIG, overrides)
    mine = out / f"rank{rank}"
    data = prepare(cfg, mine / "prepared")
    loader = die_loader(data.datasets["train"], 32, shuffle=True, seed=7, distributed=True)
    shard = [i for batch in loader for i in batch["index"].tolist()]
    sums = []
    for _ in range(2):  # epoch 0 (stage 1, head frozen), then epoch 1 (stage 2), resumed
        part = train_model("multimodal", data, cfg, mine / "run", progress=False, max_epochs=1)
        sums.append(checksum(part.model))
    done = train_model("multimodal", data, cfg, mine / "run", progress=False)  # resumed
    report = {
        "world_size": ddp.world_size(),
        "shard": shard,
        "checksums": [*sums, checksum(done.model)],
        "epochs": [row["epoch"] for row in done.history],
        "operating_point": asdict(done.operating_point),
    }
    (out / f"report{rank}.json").write_text(json.dumps(report))
    main(["--config", CONFIG, "--kind", "multimodal", *overrides, f"out_dir={mine / 'cli'}"])


if __name__ == "__main__":
    run(Path(sys.argv[1]), sys.argv[2:])

"""DDP training: two CPU ranks on gloo under torchrun, over the smoke config and tiny data.

One torchrun launch (distributed_worker.py) trains epoch by epoch with resumes, then runs
the `model.train` command; each rank is given its own run folders so that a write by
rank 1 would show.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from model import distributed as ddp
from model.checkpoint import load_trained
from model.predict import predict

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("distributed_worker.py")
RUN_FILES = {"best.pt", "checkpoints/last.pt", "history.csv", "model.pt"}


@pytest.fixture(scope="module")
def two_ranks(smoke_prepared, tmp_path_factory):
    """The worker's output folder, both ranks' reports and the prepared smoke data."""
    cfg, data = smoke_prepared
    out = tmp_path_factory.mktemp("ddp")
    overrides = [f"data_dir={cfg.data_dir}", f"data.cache_dir={cfg.data.cache_dir}"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, "--standalone", str(WORKER), str(out), *overrides],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    reports = [json.loads((out / f"report{rank}.json").read_text()) for rank in (0, 1)]
    return out, reports, data


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_ranks_train_on_disjoint_shards_that_cover_the_epoch(two_ranks):
    _, reports, data = two_ranks
    assert [r["world_size"] for r in reports] == [2, 2]
    first, second = (r["shard"] for r in reports)
    n = len(data.datasets["train"])  # 360, even: no padding repeats a die
    assert len(first) == len(second) == n // 2
    assert not set(first) & set(second)
    assert sorted(first + second) == list(range(n))


@pytest.mark.slow
def test_ranks_hold_identical_weights_and_buffers_after_every_epoch(two_ranks):
    _, (rank0, rank1), _ = two_ranks
    assert rank0["checksums"] == rank1["checksums"]  # stage 1, stage 2 (resumed), final
    assert rank0["checksums"][0] != rank0["checksums"][1]  # and training moved them


@pytest.mark.slow
def test_a_resumed_run_finishes_with_one_operating_point_on_every_rank(two_ranks):
    out, (rank0, rank1), _ = two_ranks
    assert rank0["epochs"] == rank1["epochs"] == [0, 1, 2]
    assert rank0["operating_point"] == rank1["operating_point"]
    history = pd.read_csv(out / "rank0" / "run" / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2]
    assert np.isfinite(history["train_loss"]).all()


@pytest.mark.slow
def test_only_rank_zero_writes_run_files(two_ranks):
    out, _, _ = two_ranks
    assert not (out / "rank1").exists()
    assert _files(out / "rank0" / "run") == RUN_FILES
    cli = out / "rank0" / "cli" / "smoke"
    assert _files(cli) == {
        "summary.json",
        "prepared/scaler.json",
        "prepared/tokenizer.json",
        "prepared/fitted_on.json",
        *(f"multimodal/{name}" for name in RUN_FILES),
    }
    assert set(json.loads((cli / "summary.json").read_text())) == {"multimodal"}


@pytest.mark.slow
def test_the_trained_model_loads_and_predicts(two_ranks):
    out, (rank0, _), data = two_ranks
    model, _, point = load_trained(out / "rank0" / "run" / "model.pt")
    assert point.threshold == rank0["operating_point"]["threshold"]
    probs = predict(model, data.datasets["test"])["probs"]
    assert probs.shape == (len(data.datasets["test"]), 5)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_without_torchrun_the_helpers_leave_a_single_process_run_alone():
    assert not ddp.is_active() and ddp.is_main()
    assert (ddp.world_size(), ddp.rank(), ddp.rank_seed(7)) == (1, 0, 7)
    assert ddp.setup(torch.device("cpu")) == torch.device("cpu")
    model = nn.Linear(2, 2)
    assert ddp.wrap(model, torch.device("cpu")) is model
    values = {"total": 1.5}
    assert ddp.average(values) is values
    assert ddp.from_main(max, 3, 4) == 4
    with ddp.main_first():
        pass

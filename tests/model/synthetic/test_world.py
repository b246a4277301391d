"""Randomized synthetic fabs: drawn per seed, saved with the data, still the contract's story."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from dieguard.cli import main
from model.schema import CLASS_NAMES, parameter_names, process_parameters
from model.synthetic.generate import TRUTH_FILE, generate_dataset
from model.synthetic.images import render_die
from model.synthetic.notes import BY_CLASS, write_note
from model.synthetic.plan import SplitSizes, plan_dies
from model.synthetic.process import draw_process_logs
from model.synthetic.world import (
    CAUSE_STEPS,
    DEVIATION_STEPS,
    WORLD_FILE,
    Look,
    Wording,
    World,
    draw_world,
    step_parameters,
)

NAMES = list(parameter_names())
NOMINAL = np.array([p.nominal for p in process_parameters()])
SIGMA = np.array([p.sigma for p in process_parameters()])


def test_a_world_is_a_function_of_its_seed_and_seeds_differ():
    assert draw_world(1) == draw_world(1)
    worlds = [draw_world(s) for s in range(1, 6)]
    assert len({w.deviations for w in worlds}) == 5
    assert len({w.look.layout_seed for w in worlds}) == 5
    assert len({w.traces[2].parameters for w in worlds}) > 1
    assert all(w.look != Look() and w.wording != Wording() for w in worlds)


def test_a_world_reads_back_as_saved(tmp_path):
    for world in (draw_world(7), draw_world(8, holdout=True), World()):
        world.save(tmp_path / WORLD_FILE)
        assert World.load(tmp_path / WORLD_FILE) == world


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_each_class_keeps_the_contracts_story_in_a_drawn_world(seed):
    world = draw_world(seed)
    plan = plan_dies(SplitSizes.from_total(6000), seed=seed)
    values, causes = draw_process_logs(plan, seed + 1, world=world)
    z = (values[NAMES].to_numpy() - NOMINAL) / SIGMA
    labels = plan["label"].to_numpy()
    allowed = {label: set(step_parameters(*steps)) for label, steps in CAUSE_STEPS.items()}
    deviation_parameters = set(step_parameters(*DEVIATION_STEPS))
    for i, (label, cause) in enumerate(zip(labels, causes)):
        moved = [c for c in cause.split(";") if c]
        if label == 0:
            assert moved == []
        elif label == 4:
            assert moved and set(moved) <= deviation_parameters
            assert tuple(moved) in world.deviations
            j = NAMES.index(moved[0])
            dropped_or_floored = np.isnan(z[i, j]) or values[NAMES[j]].iloc[i] == 0.0
            assert dropped_or_floored or abs(z[i, j]) >= world.deviation_size[0] - 1e-3
        else:
            assert set(moved) <= set(world.traces[label].parameters) <= allowed[label]
    for label in (1, 2, 3):
        traced = np.mean([bool(c) for c, y in zip(causes, labels) if y == label])
        chance = world.traces[label].chance
        assert chance / 2 < traced <= 1 - (1 - chance) ** len(world.traces[label].parameters) + 0.1


def test_a_drawn_world_renders_other_looks_with_the_defect_still_visible():
    row = {
        "fab": "A",
        "label": 2,
        "wafer_zone": "middle",
        "die_x": 0,
        "die_y": 0,
        "faint": False,
        "discoloration": False,
        "die_seed": 11,
    }
    look = draw_world(3).look
    demo, drawn = render_die(row), render_die(row, look=look)
    assert demo.shape == drawn.shape and np.abs(demo.astype(int) - drawn).mean() > 5
    clean = render_die(row, with_defect=False, look=look)
    assert (np.abs(drawn.astype(int) - clean).max(axis=2) > 12).sum() >= 8


def test_a_drawn_wording_keeps_some_phrases_and_its_typo_rate():
    wording = Wording(typo=0.0, phrases=2, phrase_seed=5)
    rng = np.random.default_rng(0)
    texts = {write_note(2, "", rng, None, wording).lower() for _ in range(2000)}
    own = {t.format(loc="").lower().split("{")[0].strip() for t in BY_CLASS[2]}
    used = {p for p in own if any(t.startswith(p[:12]) for t in texts)}
    assert len(used) == 2


def test_synth_randomize_writes_its_world_and_the_truth(tmp_path):
    out = tmp_path / "fab"
    args = ["synth", "--out", str(out), "--n", "40", "--val-n", "6", "--test-n", "6"]
    result = CliRunner().invoke(main, [*args, "--seed", "4", "--randomize", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert World.load(out / WORLD_FILE) == draw_world(4)
    truth = pd.read_csv(out / TRUTH_FILE, keep_default_na=False)
    assert len(truth) == 40 and set(truth["label"]) <= set(range(len(CLASS_NAMES)))


def test_the_demo_fab_writes_no_world_file(tmp_path):
    generate_dataset(tmp_path, n=20, val_n=3, test_n=3, seed=0, workers=1)
    assert not (tmp_path / WORLD_FILE).exists()


def test_a_holdout_world_keeps_the_test_splits_causes_apart():
    world = draw_world(5, holdout=True)
    seen, held = world.root_causes("train"), world.root_causes("test")
    assert len(seen) == len(held) == 3 and world.root_causes("val") == seen
    assert not {p for c in seen for p in c} & {p for c in held for p in c}
    plan = plan_dies(SplitSizes.from_total(6000), seed=5)
    _, causes = draw_process_logs(plan, 6, world=world)
    for split, own in (("train", seen), ("val", seen), ("test", held)):
        moved = causes[(plan["split"] == split) & (plan["label"] == 4)]
        assert len(moved) > 10 and {tuple(c.split(";")) for c in moved} <= set(own)


def test_holdout_needs_randomize(tmp_path):
    args = ["synth", "--out", str(tmp_path / "x"), "--n", "20", "--holdout"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0 and "--randomize" in result.output

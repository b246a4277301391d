"""Synthetic operator notes: templates, informative share, zone naming, drift words, typos."""

from __future__ import annotations

import functools

import numpy as np
import pytest

import model.synthetic.notes as notes_module
from model.synthetic.notes import (
    BY_CLASS,
    INFORMATIVE,
    LOCATIONS,
    MISLEADING,
    MISLEADING_NOTES,
    ROUTINE,
    _typo,
    write_note,
)
from model.synthetic.world import Wording

DRAWS = 3000


def _expand(templates: list[str]) -> set[str]:
    """Every text a template list can produce (lower-cased), before typos."""
    out = set()
    for t in templates:
        for loc in LOCATIONS:
            for zone in range(1, 9):
                out.add(t.format(loc=loc, zone=zone).lower())
    return out


ROUTINE_TEXTS = _expand(ROUTINE)
MISLEADING_TEXTS = _expand(MISLEADING_NOTES)
CLASS_TEXTS = {label: _expand(t) for label, t in BY_CLASS.items()}


@pytest.fixture
def no_typos(monkeypatch):
    typo_free = functools.partial(notes_module.write_note, wording=Wording(typo=0.0))
    monkeypatch.setattr(notes_module, "write_note", typo_free)


def _draw(label: int, cause: str = "", seed: int = 0, **kwargs) -> list[str]:
    rng = np.random.default_rng(seed)
    return [notes_module.write_note(label, cause, rng, **kwargs) for _ in range(DRAWS)]


def test_same_stream_same_note():
    for label in range(5):
        a = write_note(label, "", np.random.default_rng([7, 1]))
        b = write_note(label, "", np.random.default_rng([7, 1]))
        assert a == b


def test_notes_are_filled_in_text():
    for label in range(5):
        for text in _draw(label, "temperature_zone_2", seed=label)[:500]:
            assert text.strip()
            assert "{" not in text and "}" not in text


@pytest.mark.parametrize("label", [1, 2, 3, 4])
def test_defect_notes_are_informative_only_sometimes(no_typos, label):
    texts = [t.lower() for t in _draw(label, "temperature_zone_3", seed=label)]
    informative = np.mean([t in CLASS_TEXTS[label] for t in texts])
    routine = np.mean([t in ROUTINE_TEXTS for t in texts])
    assert abs(informative - INFORMATIVE) < 0.05
    assert abs(informative + routine - 1.0) < 1e-9  # nothing else is written


def test_good_die_notes(no_typos):
    texts = [t.lower() for t in _draw(0, seed=3)]
    misleading = np.mean([t in MISLEADING_TEXTS for t in texts])
    routine = np.mean([t in ROUTINE_TEXTS for t in texts])
    assert abs(misleading - MISLEADING) < 0.03
    assert abs(misleading + routine - 1.0) < 1e-9
    assert not any(t in CLASS_TEXTS[1] | CLASS_TEXTS[2] | CLASS_TEXTS[3] for t in texts)


def test_temperature_notes_name_the_zone(no_typos):
    texts = [t.lower() for t in _draw(4, "temperature_zone_7", seed=5)]
    zone_notes = [t for t in texts if "zone " in t]
    assert len(zone_notes) > 100
    assert all("zone 7" in t for t in zone_notes)


def test_drift_words_appear_in_about_half(no_typos):
    words = ["recipe B qualified", "new MES form"]
    texts = _draw(0, seed=6, extra_words=words)
    with_word = np.mean([any(w.lower() in t.lower() for w in words) for t in texts])
    assert 0.4 < with_word < 0.6
    plain = _draw(0, seed=6)
    assert not any(any(w.lower() in t.lower() for w in words) for t in plain)


def test_typos_and_capitalisation_vary_the_text():
    texts = _draw(0, seed=9)
    lowered = {t.lower() for t in texts}
    known = ROUTINE_TEXTS | MISLEADING_TEXTS
    typo_share = np.mean([t.lower() not in known for t in texts])
    assert 0.05 < typo_share < 0.2  # a typo in 15%, some typos leave the text unchanged
    assert any(t[0].isupper() for t in texts)
    assert len(lowered) > len(ROUTINE)


def test_typo_changes_one_letter():
    rng = np.random.default_rng(0)
    text = "vibration spike during CMP step"
    for _ in range(200):
        out = _typo(text, rng)
        assert abs(len(out) - len(text)) <= 1
        assert sorted(set(out)) == sorted(set(out) & set(text))  # no new characters
    assert len({_typo(text, rng) for _ in range(100)}) > 10

"""Synthetic operator notes: varied wording, paraphrases and typos, informative only sometimes."""

from __future__ import annotations

import numpy as np

from model.synthetic.world import Wording

INFORMATIVE = 0.55  # share of notes on defective dies that speak of the defect
MISLEADING = 0.08  # share of notes on good dies that name a defect-like symptom
DEMO_WORDING = Wording()

LOCATIONS = ["near the edge", "near the notch", "at center", "on the left side", "upper right"]
ROUTINE = [
    "recipe adjusted for humidity",
    "shift handover, nothing to report",
    "routine check ok",
    "PM done on chamber, requalified",
    "lot on hold for metrology, released",
    "nominal run",
    "new slurry batch loaded",
    "operator rotation",
    "checked alignment marks, fine",
    "tool idle 20 min before lot",
]
BY_CLASS = {
    1: [
        "particles observed {loc}",
        "particle contamination seen {loc}",
        "few particles on die {loc}",
        "foreign material suspected {loc}",
        "chamber flake event, particles likely",
    ],
    2: [
        "vibration spike during CMP step",
        "scratch visible {loc}",
        "cmp vibration alarm, check for scratches",
        "possible scratch from wafer handling",
        "pad conditioner noisy during polish",
    ],
    3: [
        "litho rework",
        "focus alarm on scanner",
        "overlay out of spec, rework considered",
        "pattern looks bridged {loc}",
        "exposure dose drift flagged",
    ],
    4: [
        "temperature alarm zone {zone}",
        "furnace zone {zone} ran hot",
        "etch endpoint late",
        "deposition temp excursion",
        "discoloration {loc}, thermal event suspected",
    ],
}
MISLEADING_NOTES = [
    "possible particle {loc}, reinspected ok",
    "slight discoloration {loc}",
    "scratch suspected, turned out to be reflection",
    "temperature alarm cleared, false trigger",
]


def write_note(
    label: int,
    cause: str,
    rng: np.random.Generator,
    extra_words: list[str] | None = None,
    wording: Wording = DEMO_WORDING,
) -> str:
    """One die's note (the caller decides whether the die has one).

    Args:
        label: the die's class.
        cause: the process parameters its defect moved, ';'-joined (zones are named from it).
        rng: the die's random stream.
        extra_words: drift: new vocabulary that operators start to use.
        wording: the world's phrase lists and typo rate (default: the demo fab's).
    """
    if label > 0 and rng.random() < INFORMATIVE:
        text = str(rng.choice(_phrases(BY_CLASS[label], wording)))
    elif label == 0 and rng.random() < MISLEADING:
        text = str(rng.choice(_phrases(MISLEADING_NOTES, wording)))
    else:
        text = str(rng.choice(_phrases(ROUTINE, wording)))
    zone = cause.split(";")[0].rsplit("_", 1)[-1] if "temperature_zone" in cause else "3"
    text = text.format(loc=rng.choice(LOCATIONS), zone=zone)
    if extra_words and rng.random() < 0.5:
        text = f"{text}, {rng.choice(extra_words)}"
    if rng.random() < 0.3:
        text = text.capitalize()
    if rng.random() < wording.typo:
        text = _typo(text, rng)
    return text


def _phrases(phrases: list[str], wording: Wording) -> list[str]:
    """The world's share of a phrase list: its operators use only some of the wordings."""
    if not wording.phrases or wording.phrases >= len(phrases):
        return phrases
    pick = np.random.default_rng([wording.phrase_seed, len(phrases), len(phrases[0])])
    return [phrases[i] for i in sorted(pick.choice(len(phrases), wording.phrases, replace=False))]


def _typo(text: str, rng: np.random.Generator) -> str:
    i = int(rng.integers(1, max(2, len(text) - 1)))
    kind = rng.integers(0, 3)
    if kind == 0:
        return text[:i] + text[i + 1 :]  # dropped letter
    if kind == 1:
        return text[: i - 1] + text[i] + text[i - 1] + text[i + 1 :]  # swapped letters
    return text[:i] + text[i] + text[i:]  # doubled letter

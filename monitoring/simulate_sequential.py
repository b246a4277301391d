"""The error rates of the rollout's sequential rule, by simulation.

The rule (monitoring.rollout.bounds_verdict) looks at the evidence at every check, so its
error rates are not the 2.5% of one one-sided 95% bound: each look is another chance. This
module streams labelled dies of a known true escape rate and FPR through the rule, check
after check, and counts how often it promotes, rolls back or stays undecided. The 4-hour
escape window rule is left out: it only adds rollbacks, so the promotion rates here are
upper bounds. Run it with `python -m monitoring.simulate_sequential`.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from monitoring.rollout import RolloutConfig, bounds_verdict, rate

_rate = lru_cache(maxsize=None)(rate)  # the same counts recur across simulated rollouts


def outcome_rates(
    true_escape: float,
    true_fpr: float,
    config: RolloutConfig,
    defect_share: float = 0.1,
    dies_per_check: int = 100,
    checks: int = 100,
    trials: int = 500,
    seed: int = 0,
) -> dict[str, float]:
    """Shares of `trials` rollouts that end promoted, rolled back or undecided.

    Args:
        true_escape, true_fpr: the challenger's true rates.
        defect_share: the share of labelled dies that are defective.
        dies_per_check: labelled dies between two checks.
        checks: checks before a rollout counts as undecided.
    """
    rng = np.random.default_rng(seed)
    ends = {"promote": 0, "rollback": 0, "hold": 0}
    for _ in range(trials):
        ends[
            _one_rollout(rng, true_escape, true_fpr, config, defect_share, dies_per_check, checks)
        ] += 1
    return {"promoted": ends["promote"] / trials, "rolled_back": ends["rollback"] / trials,
            "undecided": ends["hold"] / trials}  # fmt: skip


def _one_rollout(rng, true_escape, true_fpr, config, defect_share, dies_per_check, checks) -> str:
    defective = rng.binomial(dies_per_check, defect_share, checks).cumsum()
    good = np.arange(1, checks + 1) * dies_per_check - defective
    escapes = rng.binomial(np.diff(defective, prepend=0), true_escape).cumsum()
    flags = rng.binomial(np.diff(good, prepend=0), true_fpr).cumsum()
    for i in range(checks):
        escape = _rate(int(escapes[i]), int(defective[i]), config.confidence)
        fpr = _rate(int(flags[i]), int(good[i]), config.confidence)
        action, _ = bounds_verdict(escape, fpr, int(defective[i] + good[i]), config)
        if action != "hold":
            return action
    return "hold"


SCENARIOS = (  # (what, true escape rate, true FPR)
    ("sound: escape 0.2%, FPR 8%", 0.002, 0.08),
    ("escape at its gate (1%), FPR 8%", 0.01, 0.08),
    ("FPR at its gate (15%), escape 0.2%", 0.002, 0.15),
    ("escape twice its gate (2%)", 0.02, 0.08),
    ("FPR 25%", 0.002, 0.25),
)


def main() -> None:
    config = RolloutConfig()
    print(f"seed rules: gates escape {config.max_escape:.0%} FPR {config.max_fpr:.0%}, "
          f"{config.min_labels} labels ({config.min_defective} defective) first; 10% "
          "defective, a check every 100 labelled dies, 100 checks, 500 rollouts each")  # fmt: skip
    for what, escape, fpr in SCENARIOS:
        r = outcome_rates(escape, fpr, config)
        print(f"{what:<38} promoted {r['promoted']:6.1%}  rolled back {r['rolled_back']:6.1%}"
              f"  undecided {r['undecided']:6.1%}")  # fmt: skip


if __name__ == "__main__":
    main()

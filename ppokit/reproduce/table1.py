"""The PPO paper's Table 1: its settings, its environments and its numbers, as data.

Schulman, Wolski, Dhariwal, Radford, Klimov (2017). Proximal Policy Optimization Algorithms.
arXiv:1707.06347, section 6.1 and Table 1: seven MuJoCo tasks (gym v1), 1M steps, 3 seeds each;
the score of a run is the mean return of its last 100 training episodes; per env, a random policy
scores 0 and the best setting 1; a setting's number is the mean over its 21 runs.

Each setting is a run of the ``ppo-paper`` preset with one algorithm and a few config fields.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppokit.errors import ConfigError, did_you_mean, quote

NAME = "ppo-table1"
PRESET = "ppo-paper"
CITATION = "Schulman et al. 2017, Proximal Policy Optimization Algorithms, arXiv:1707.06347, Table 1"

# The paper's seven tasks (MuJoCo gym v1 then; v5 is today's version of each).
ENVS = (
    "HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5",
    "Reacher-v5", "Swimmer-v5", "Walker2d-v5",
)
DEFAULT_SEEDS = 3
DEFAULT_STEPS = 1_000_000
DEFAULT_RANDOM_EPISODES = 100  # episodes of uniformly random actions that define a score of 0


@dataclass(frozen=True)
class Setting:
    """One row of Table 1: how ppokit runs it and the paper's average normalized score."""

    name: str  # e.g. "clip-0.2"
    label: str  # the paper's wording
    algo: str  # ppo | ppo-kl
    sets: tuple[str, ...]  # --set overrides on top of the ppo-paper preset
    paper_score: float


def _clip(eps: str, score: float) -> Setting:
    return Setting(f"clip-{eps}", f"Clipping, eps = {eps}", "ppo", (f"ppo.clip_coef={eps}",), score)


def _adaptive(target: str, score: float) -> Setting:
    return Setting(f"kl-adaptive-{target}", f"Adaptive KL, d_targ = {target}", "ppo-kl",
                   ("ppo_kl.adaptive=true", f"ppo_kl.kl_target={target}", "ppo_kl.beta_init=1.0"), score)


def _fixed(beta: str, score: float) -> Setting:
    return Setting(f"kl-fixed-{beta}", f"Fixed KL, beta = {beta}", "ppo-kl",
                   ("ppo_kl.adaptive=false", f"ppo_kl.beta_init={beta}"), score)


# The paper's Table 1, in its order (average normalized score over 21 runs).
SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("no-clip", "No clipping or penalty", "ppo", ("ppo.clip_coef=null",), -0.39),
    _clip("0.1", 0.76), _clip("0.2", 0.82), _clip("0.3", 0.70),
    _adaptive("0.003", 0.68), _adaptive("0.01", 0.74), _adaptive("0.03", 0.71),
    _fixed("0.3", 0.62), _fixed("1", 0.71), _fixed("3", 0.72), _fixed("10", 0.69),
)}


def parse_settings(text: str | None) -> list[Setting]:
    """``"clip-0.2,no-clip"`` -> those settings in the paper's order (None: all of them);
    ConfigError naming an unknown one."""
    if text is None:
        return list(SETTINGS.values())
    names = _parse_list(text, "--settings")
    for name in names:
        if name not in SETTINGS:
            raise ConfigError(f"--settings: unknown setting {quote(name)}{did_you_mean(name, SETTINGS)} "
                              f"(accepted: {', '.join(SETTINGS)})")
    return [setting for setting in SETTINGS.values() if setting.name in names]


def parse_envs(text: str | None) -> list[str]:
    """``"Hopper-v5,Swimmer-v5"`` -> the env ids in the order given (None: the paper's seven)."""
    return list(ENVS) if text is None else _parse_list(text, "--envs")


def _parse_list(text: str, flag: str) -> list[str]:
    names = [part.strip() for part in text.split(",")]
    if not all(names):
        raise ConfigError(f"{flag} {quote(text)}: expected comma-separated names, e.g. {flag} a,b")
    return list(dict.fromkeys(names))  # duplicates once

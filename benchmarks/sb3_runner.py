"""Train Stable-Baselines3 PPO once and write what ppokit's ``summary.json`` measures.

Meant to run in a fresh subprocess per run (``compare.py`` does that)::

    python benchmarks/sb3_runner.py --env CartPole-v1 --config zoo --seed 0 \
        --total-steps 100000 --threshold 475 --out result.json

Measured the way ppokit measures itself:

* ``wall_time_s``: from just before the environments are created to the end of ``learn()``
  (env creation, model construction and training; imports and the final evaluation excluded).
* ``sps``: environment steps actually taken / ``wall_time_s``.
* ``solved_at_step`` / ``solved_at_time_s``: first step (and seconds since the start above) at
  which the mean return of the last 20 finished *training* episodes (Monitor infos) reached the
  threshold; a full window of 20 episodes is required.
* ``eval_return_mean`` / ``eval_return_std``: deterministic policy, 20 episodes (``--eval-episodes``)
  on fresh environments (observation normalisation frozen from training, rewards unnormalised).

Atari ids (``ALE/Pong-v5``, ``ALE/Breakout-v5``) use the zoo's ``atari`` entry: ``make_atari_env``
(AtariWrapper under a Monitor, so returns are full games) and ``VecFrameStack(4)``.

Torch runs with one intra-op thread by default (``--threads 1``), as on a 2-core box SB3 and
ppokit would otherwise fight over the cores differently.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

# Zoo hyperparameters, transcribed from rl-baselines3-zoo ``hyperparams/ppo.yml``
# (github.com/DLR-RM/rl-baselines3-zoo). Values such as "lin_0.001" are linear schedules from
# that value down to 0 over training. Keys not given fall back to SB3 defaults (vf_coef 0.5,
# max_grad_norm 0.5, clip_range_vf None, normalize_advantage True, 64x64 tanh actor and critic).
_HALFCHEETAH_ZOO: dict[
    str, Any
] = {  # zoo entry "HalfCheetah-v3" (also used for v4 / v5)
    "normalize": True,
    "n_envs": 1,
    "policy": "MlpPolicy",
    "n_timesteps": 1_000_000,
    "batch_size": 64,
    "n_steps": 512,
    "gamma": 0.98,
    "learning_rate": 2.0633e-05,
    "ent_coef": 0.000401762,
    "clip_range": 0.1,
    "n_epochs": 20,
    "gae_lambda": 0.92,
    "max_grad_norm": 0.8,
    "vf_coef": 0.58096,
    "policy_kwargs": {
        "log_std_init": -2,
        "ortho_init": False,
        "activation_fn": "relu",
        "net_arch": {"pi": [256, 256], "vf": [256, 256]},
    },
}

# Zoo entry "Swimmer-v3" (also used for v4 / v5): SB3's defaults, VecNormalize, gamma 0.9999.
_SWIMMER_ZOO: dict[str, Any] = {
    "normalize": True,
    "policy": "MlpPolicy",
    "n_timesteps": 1_000_000,
    "gamma": 0.9999,
}

# Zoo entry "atari" (used for every Atari id). ``env_kwargs``: ALE v5 ids skip 4 frames
# themselves; AtariWrapper skips them too, so the env is made with frameskip=1 (as ppokit does).
_ATARI_ZOO: dict[str, Any] = {
    "env_wrapper": "AtariWrapper",
    "frame_stack": 4,
    "policy": "CnnPolicy",
    "n_envs": 8,
    "n_timesteps": 10_000_000,
    "n_steps": 128,
    "n_epochs": 4,
    "batch_size": 256,
    "learning_rate": "lin_2.5e-4",
    "clip_range": "lin_0.1",
    "vf_coef": 0.5,
    "ent_coef": 0.01,
    "env_kwargs": {"frameskip": 1},
}

ZOO_CONFIGS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {  # zoo entry "CartPole-v1"
        "n_envs": 8,
        "policy": "MlpPolicy",
        "n_timesteps": 100_000,
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": "lin_0.001",
        "clip_range": "lin_0.2",
    },
    "HalfCheetah-v3": _HALFCHEETAH_ZOO,
    "HalfCheetah-v4": _HALFCHEETAH_ZOO,
    "HalfCheetah-v5": _HALFCHEETAH_ZOO,
    "Swimmer-v3": _SWIMMER_ZOO,
    "Swimmer-v4": _SWIMMER_ZOO,
    "Swimmer-v5": _SWIMMER_ZOO,
    "ALE/Pong-v5": _ATARI_ZOO,
    "ALE/Breakout-v5": _ATARI_ZOO,
}

WINDOW = 20
EVAL_EPISODES = 20


def zoo_config(env_id: str) -> dict[str, Any]:
    """Return a copy of the zoo hyperparameters for ``env_id`` (KeyError if none)."""
    try:
        return json.loads(json.dumps(ZOO_CONFIGS[env_id]))
    except KeyError:
        known = ", ".join(sorted(ZOO_CONFIGS))
        raise KeyError(f"no zoo config for {env_id!r}; known: {known}") from None


def register_atari() -> None:
    """Register ale-py's ``ALE/`` ids with gymnasium (a no-op without ale-py)."""
    try:
        import ale_py
        import gymnasium as gym
    except ImportError:
        return
    gym.register_envs(ale_py)


def default_threshold(env_id: str) -> float | None:
    """The env's registered ``reward_threshold`` (475 for CartPole-v1), or None."""
    import gymnasium as gym

    register_atari()
    return gym.spec(env_id).reward_threshold


def make_envs(env_id: str, hp: dict[str, Any], n_envs: int, seed: int) -> Any:
    """The zoo's vector env: DummyVecEnv of Monitor-wrapped envs; for ``env_wrapper: AtariWrapper``
    (popped from ``hp`` with ``frame_stack`` and ``env_kwargs``) ``make_atari_env`` (Monitor below
    AtariWrapper: full-game raw returns) and ``VecFrameStack``."""
    from stable_baselines3.common.env_util import make_atari_env, make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    wrapper, frame_stack, env_kwargs = hp.pop("env_wrapper", None), hp.pop("frame_stack", None), hp.pop(
        "env_kwargs", None)
    if wrapper is None:
        return make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    register_atari()
    env = make_atari_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=env_kwargs)
    return VecFrameStack(env, frame_stack) if frame_stack else env


def _schedule(value: float | str) -> Any:
    """Turn a zoo value ("lin_X" or a number) into what SB3 accepts."""
    from stable_baselines3.common.utils import LinearSchedule

    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[4:]), 0.0, 1.0)
    return float(value)


def _policy_kwargs(raw: dict[str, Any]) -> dict[str, Any]:
    """Resolve the JSON-friendly policy kwargs (activation given by name)."""
    from torch import nn

    kwargs = dict(raw)
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = {"relu": nn.ReLU, "tanh": nn.Tanh}[
            kwargs["activation_fn"]
        ]
    return kwargs


def _make_callback(threshold: float | None, t0: float) -> Any:
    """Callback recording solve step/time and the rollout vs update time split."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _BenchCallback(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.returns: deque[float] = deque(maxlen=WINDOW)
            self.last100: deque[float] = deque(maxlen=100)  # the PPO paper's score (docs/presets.md)
            self.solved_at_step: int | None = None
            self.solved_at_time_s: float | None = None
            self.time_rollout_s = 0.0
            self.time_update_s = 0.0
            self.learn_start = 0.0
            self._mark = 0.0

        def _on_training_start(self) -> None:
            self.learn_start = self._mark = time.perf_counter()

        def _on_rollout_start(self) -> None:
            now = time.perf_counter()
            self.time_update_s += now - self._mark
            self._mark = now

        def _on_rollout_end(self) -> None:
            now = time.perf_counter()
            self.time_rollout_s += now - self._mark
            self._mark = now

        def _on_training_end(self) -> None:
            self.time_update_s += time.perf_counter() - self._mark

        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                episode = info.get("episode")
                if episode is None:
                    continue
                self.returns.append(float(episode["r"]))
                self.last100.append(float(episode["r"]))
                if (
                    self.solved_at_step is None
                    and threshold is not None
                    and len(self.returns) == WINDOW
                    and sum(self.returns) / WINDOW >= threshold
                ):
                    self.solved_at_step = int(self.num_timesteps)
                    self.solved_at_time_s = time.perf_counter() - t0
            return True

    return _BenchCallback()


def run(
    env_id: str,
    config: dict[str, Any],
    seed: int,
    total_steps: int,
    threshold: float | None,
    threads: int = 1,
    eval_episodes: int = EVAL_EPISODES,
) -> dict[str, Any]:
    """Train SB3 PPO once and return the summary dict (same field names as ppokit)."""
    import gymnasium as gym
    import numpy as np
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import VecNormalize

    torch.set_num_threads(threads)
    hp = dict(config)
    normalize = bool(hp.pop("normalize", False))
    n_envs = int(hp.pop("n_envs", 1))
    hp.pop("n_timesteps", None)
    policy = hp.pop("policy", "MlpPolicy")
    for key in ("learning_rate", "clip_range"):
        if key in hp:
            hp[key] = _schedule(hp[key])
    if "policy_kwargs" in hp:
        hp["policy_kwargs"] = _policy_kwargs(hp["policy_kwargs"])

    t0 = time.perf_counter()
    eval_hp = dict(hp)  # the eval env is made the same way
    env = make_envs(env_id, hp, n_envs, seed)
    if normalize:  # the zoo passes the config's gamma to VecNormalize
        env = VecNormalize(env, gamma=float(hp.get("gamma", 0.99)))
    model = PPO(policy, env, seed=seed, device="cpu", verbose=0, **hp)
    callback = _make_callback(threshold, t0)
    model.learn(total_timesteps=total_steps, callback=callback)
    wall = time.perf_counter() - t0

    t_eval = time.perf_counter()
    returns: list[float] = []
    if eval_episodes > 0:
        eval_env = make_envs(env_id, eval_hp, 1, seed + 10_000)
        if normalize:
            assert isinstance(env, VecNormalize)
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)
            eval_env.obs_rms = env.obs_rms
        returns, _ = evaluate_policy(
            model,
            eval_env,
            n_eval_episodes=eval_episodes,
            deterministic=True,
            return_episode_rewards=True,
        )
    eval_time = time.perf_counter() - t_eval
    steps = int(model.num_timesteps)
    recent = list(callback.returns)
    return {
        "status": "completed",
        "library": "sb3",
        "env_id": env_id,
        "algo": "ppo",
        "seed": seed,
        "total_steps": total_steps,
        "steps_done": steps,
        "wall_time_s": wall,
        "sps": steps / wall,
        "train_return_last20": float(np.mean(recent)) if recent else None,
        "train_return_last100": float(np.mean(callback.last100)) if callback.last100 else None,
        "eval_return_mean": float(np.mean(returns)) if returns else None,
        "eval_return_std": float(np.std(returns)) if returns else None,
        "eval_episodes": eval_episodes,
        "eval_time_s": eval_time,
        "solved_threshold": threshold,
        "solved_at_step": callback.solved_at_step,
        "solved_at_time_s": callback.solved_at_time_s,
        "time_setup_s": callback.learn_start - t0,
        "time_rollout_s": callback.time_rollout_s,
        "time_update_s": callback.time_update_s,
        "threads": threads,
        "config": config,
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "gymnasium": gym.__version__,
            "stable_baselines3": stable_baselines3.__version__,
        },
    }


def resolve_threshold(text: str, env_id: str) -> float | None:
    """Parse --threshold: a number, 'none', or 'env' (the env's registered threshold)."""
    if text.lower() == "env":
        return default_threshold(env_id)
    return None if text.lower() in ("none", "null") else float(text)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env", required=True, help="Gymnasium env id, e.g. CartPole-v1"
    )
    parser.add_argument(
        "--config", default="zoo", choices=["zoo"], help="hyperparameter set"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--total-steps", type=int, default=None, help="default: the zoo's"
    )
    parser.add_argument(
        "--threshold",
        default="env",
        help="return to reach: a number, 'none', or 'env' (the env's reward_threshold, default)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads value"
    )
    parser.add_argument(
        "--eval-episodes", type=int, default=EVAL_EPISODES,
        help="deterministic episodes after training (0: none; Atari games are long)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="where to write the JSON result"
    )
    args = parser.parse_args(argv)

    try:
        config = zoo_config(args.env)
    except KeyError as exc:
        print(f"sb3_runner: {exc.args[0]}", file=sys.stderr)
        return 2
    threshold = resolve_threshold(args.threshold, args.env)
    total = args.total_steps or int(config["n_timesteps"])
    result = run(args.env, config, args.seed, total, threshold, args.threads, args.eval_episodes)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

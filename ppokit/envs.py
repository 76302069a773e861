"""Environment construction: one vector env per process, autoreset mode chosen and asserted.

Two autoreset modes are supported, and the rollout handles each explicitly:

* ``NEXT_STEP`` (gymnasium's own vectorized envs, e.g. the numpy CartPole): the step that ends
  an episode returns the true final observation; the *next* step resets that sub-env, ignores
  its action and returns reward 0. That reset transition is marked invalid and never learned from.
* ``SAME_STEP`` (our SyncVectorEnv / AsyncVectorEnv): the step that ends an episode returns the
  reset observation and puts the final one in ``infos["final_obs"]``.

``env.vector=envpool`` (the ``envpool`` extra) steps EnvPool's C++ envs: NEXT_STEP, like gymnasium's
own vectorized envs (the done step returns the final observation, the next one resets).
Classic control and MuJoCo ids are EnvPool's envs of the same id; ``ALE/`` ids with the ``atari``
preprocessing of :mod:`ppokit.pixels` are EnvPool's Atari envs (``ALE/Pong-v5`` -> ``Pong-v5``),
which preprocess the frames themselves in C++: the ``pixels`` section and ALE's settings in
``env.kwargs`` are translated into EnvPool's options (:func:`atari_options`), and
:class:`AtariGames` reports full games with raw scores as the gymnasium path's training envs do.
EnvPool's frames are not bit for bit gymnasium's (docs/atari.md measures how far apart). Either way
the agent is built on the spaces of gymnasium's env of that id, with the same preprocessing, and
evaluations, ``eval``, ``record`` and ``export`` run gymnasium's env.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import ppokit.demo_envs  # noqa: F401  (registers the ppokit-demo/ envs)
from ppokit import pixels as pixel_wrappers
from ppokit.errors import ConfigError, EnvError, did_you_mean, first_line, quote
from ppokit.extras import install_command, require
from ppokit.spaces import check_spaces

if TYPE_CHECKING:
    from ppokit.config import Config, PixelsConfig

# Module named in a DependencyNotInstalled / ImportError message -> what installs it.
INSTALL_FOR_MODULE = {
    "mujoco": install_command("mujoco"),
    "ale_py": install_command("atari"),
    "ale-py": install_command("atari"),
    "box2d": "pip install 'gymnasium[box2d]'",
    "pygame": install_command("video"),  # classic-control rendering (ppokit record, watch)
    "opencv": install_command("atari"),  # gymnasium's AtariPreprocessing and ResizeObservation
    "cv2": install_command("atari"),
}


# Marks an EnvError message that already names the env and the sub-env, so that wrapping layers
# (the async worker, VectorEnvs.step) pass it on unchanged instead of prefixing it again.
_NAMED = " sub-env "

# What an env's code may raise that is its failure, not ppokit's: any exception, and SystemExit (an env
# calling sys.exit() in step must fail the run with a summary, not end the process with status 0).
# KeyboardInterrupt stays Ctrl-C.
ENV_FAILURES = (Exception, SystemExit)


def describe(error: BaseException, where: str) -> str:
    """``raised in step: RuntimeError: ...`` (``called sys.exit(0) in step`` for a SystemExit)."""
    if isinstance(error, SystemExit):
        return f"called sys.exit({error.code!r}) in {where}"
    return f"raised in {where}: {type(error).__name__}: {first_line(error)}"


def ensure_registered(env_id: str, import_module: bool = False) -> gym.envs.registration.EnvSpec:
    """The spec of ``env_id``, importing ale_py for ``ALE/`` ids; ConfigError if unknown.

    ``module:Env-v0`` (as ``gymnasium.make`` accepts) needs ``module`` imported to register the env.
    Only an id the user gave (on the command line, in a Python call) may import it
    (``import_module=True``): an id read from a file (a checkpoint, a run folder) is used only if
    its module is imported already, so that loading what a stranger sent never runs code.
    """
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"env id: expected a registered Gymnasium id such as CartPole-v1, got {env_id!r}")
    if env_id.startswith("ALE/"):
        try:
            import ale_py  # (registers the ALE/ ids)

            gym.register_envs(ale_py)
            # No banner on stderr when an env is made: an error stays the one line ppokit prints.
            ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)
        except ImportError:
            raise ConfigError(f"env {quote(env_id)} needs the Atari extra: {install_command('atari')}") from None
    name = env_id
    if ":" in env_id:  # importing the module registers the env
        module, name = env_id.split(":", 1)
        if module not in sys.modules and not import_module:
            raise ConfigError(
                f"env {quote(env_id)} names a Python module to import ({quote(module)}); ppokit never imports "
                "what a checkpoint or run folder names: give the env yourself (ppokit eval/record --env "
                f"{env_id}, ppokit train {env_id} --resume ..., or ppokit.evaluate(agent, {env_id!r}))"
            )
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001  (any import failure is bad input)
            raise ConfigError(f"env {quote(env_id)}: cannot import module {quote(module)} "
                              f"({type(error).__name__}: {first_line(error)})") from None
    try:
        return gym.spec(name)
    except gym.error.Error:
        pass
    raise ConfigError(
        f"unknown env {quote(env_id)}{did_you_mean(name, gym.envs.registry)} "
        "(any registered Gymnasium id is accepted; list them with: python -c 'import gymnasium; "
        "gymnasium.pprint_registry()')"
    )


def creation_error(env_id: str, error: BaseException) -> ConfigError:
    """A one-line ConfigError for an env that cannot be created (missing extra, bad kwargs, ...)."""
    if isinstance(error, SystemExit):
        return ConfigError(f"env {quote(env_id)} cannot be created: it {describe(error, 'its constructor')}")
    text = str(error)
    if isinstance(error, (gym.error.DependencyNotInstalled, ImportError)):
        for module, install in INSTALL_FOR_MODULE.items():
            if module in text.lower():
                return ConfigError(f"env {quote(env_id)} needs {module}, which is not installed: "
                                   f"{install} ({first_line(error)})")
        return ConfigError(f"env {quote(env_id)} needs a package that is not installed: {first_line(error)}")
    if isinstance(error, TypeError) and "argument" in text:
        return ConfigError(f"env.kwargs: {quote(env_id)} does not accept them: {first_line(error)}")
    return ConfigError(f"env {quote(env_id)} cannot be created: {type(error).__name__}: {first_line(error)}")


def is_mujoco(spec: gym.envs.registration.EnvSpec) -> bool:
    """Whether ``spec`` is one of gymnasium's MuJoCo envs (HalfCheetah-v5, Hopper-v5, ...)."""
    return isinstance(spec.entry_point, str) and spec.entry_point.startswith("gymnasium.envs.mujoco")


def route_mujoco_warnings() -> None:
    """MuJoCo's warnings become Python warnings (``RuntimeWarning``, each text shown once per process).

    MuJoCo's own handler prints them and appends them to ``MUJOCO_LOG.TXT`` in the working
    directory: a file outside the run folder, left wherever ``ppokit`` was started. A handler the
    user installed (``mujoco.set_mju_user_warning``) is kept."""
    try:
        import mujoco
    except ImportError:
        return  # gymnasium.make says the extra is missing
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_warn_from_mujoco)


_MUJOCO_SHOWN: set[str] = set()  # MuJoCo's texts warned about in this process


def _warn_from_mujoco(message: str) -> None:
    # Once per text and process (a warnings registry would be cleared by any change of the filters),
    # as one line on stderr, ``MuJoCo:0: RuntimeWarning: <text>`` (no source line to quote);
    # filterable as module ``mujoco``, e.g. ``python -W ignore::RuntimeWarning:mujoco -m ppokit ...``.
    if message not in _MUJOCO_SHOWN:
        _MUJOCO_SHOWN.add(message)
        warnings.warn_explicit(message, RuntimeWarning, "MuJoCo", 0, module="mujoco")


def make_env(env_id: str, kwargs: dict | None = None, render_mode: str | None = None,
             max_episode_steps: int | None = None) -> gym.Env:
    """One env (for evaluation and recording); any failure to create it is a ConfigError.

    ``kwargs`` are the config's ``env.kwargs`` (which may hold ``max_episode_steps`` too); the
    ``render_mode`` and ``max_episode_steps`` arguments, when given, take precedence over them."""
    if is_mujoco(ensure_registered(env_id)):
        route_mujoco_warnings()
    options = dict(kwargs or {})
    if render_mode is not None:  # not every env takes it
        options["render_mode"] = render_mode
    if max_episode_steps is not None:
        options["max_episode_steps"] = max_episode_steps
    try:
        return gym.make(env_id, **options)
    except ENV_FAILURES as error:  # translated into one line
        raise creation_error(env_id, error) from None


class ReportErrors(gym.Wrapper):
    """Re-raises any exception from step/reset as :class:`EnvError` naming the env and index."""

    def __init__(self, env: gym.Env, env_id: str, index: int | None):
        super().__init__(env)
        self.env_id = env_id
        self.index = index  # None: a single env (evaluation, recording)

    def _error(self, where: str, error: BaseException) -> EnvError:
        who = f"{_NAMED}{self.index}" if self.index is not None else ""
        return EnvError(f"env {quote(self.env_id)}{who} {describe(error, where)}")

    def step(self, action: Any):
        try:
            return self.env.step(action)
        except ENV_FAILURES as error:  # re-raised with context
            raise self._error("step", error) from error

    def reset(self, **kwargs: Any):
        try:
            return self.env.reset(**kwargs)
        except ENV_FAILURES as error:
            raise self._error("reset", error) from error


@dataclass
class VectorEnvs:
    """A gymnasium VectorEnv plus what the rollout needs to know about it."""

    env: gym.vector.VectorEnv
    env_id: str
    autoreset_mode: AutoresetMode
    seed: int
    game_scores: bool = False  # sub-envs report full-game raw scores in info["game"] (ppokit.pixels)

    @property
    def num_envs(self) -> int:
        return self.env.num_envs

    @property
    def observation_space(self) -> gym.Space:
        return self.env.single_observation_space

    @property
    def action_space(self) -> gym.Space:
        return self.env.single_action_space

    def reset(self) -> np.ndarray:
        try:
            with _quiet_async_errors(self.env):
                obs, _ = self.env.reset(seed=self.seed)
        except ENV_FAILURES as error:
            raise self._error("reset", error) from error
        return obs

    def step(self, actions: np.ndarray):
        try:
            if isinstance(self.env, gym.vector.AsyncVectorEnv):
                with _quiet_async_errors(self.env):
                    return self.env.step(actions)
            return self.env.step(actions)
        except ENV_FAILURES as error:  # vectorized envs have no per-sub-env wrapper
            raise self._error("step", error) from error

    def _error(self, where: str, error: BaseException) -> EnvError:
        """The error as an EnvError; one raised by a sub-env (in this process or a worker) keeps its message."""
        text = first_line(error)
        if isinstance(error, EnvError) and _NAMED in text:
            return EnvError(text)
        return EnvError(f"env {quote(self.env_id)} {describe(error, where)}")

    def close(self) -> None:
        self.env.close()


class _quiet_async_errors:
    """AsyncVectorEnv logs a worker's full traceback as a warning before re-raising its error in the
    parent; ppokit reports the error itself in one line, so those warnings are silenced."""

    def __init__(self, env: gym.vector.VectorEnv):
        self.active = isinstance(env, gym.vector.AsyncVectorEnv)

    def __enter__(self) -> None:
        if self.active:
            self.saved = gym.logger.min_level
            gym.logger.min_level = gym.logger.ERROR + 10

    def __exit__(self, *exc: Any) -> None:
        if self.active:
            gym.logger.min_level = self.saved


EnvFactory = Callable[[], gym.Env]  # returns a new env each call
Wrapper = Callable[[gym.Env], gym.Env]  # e.g. gymnasium.wrappers.ClipReward, or any env -> env function


@dataclass(frozen=True)
class EnvSource:
    """Where a run's environments come from: the config's ``env_id`` (made with ``env.kwargs``) or a
    user's callable, then ``wrappers`` in order. Neither the callable nor the wrappers are saved in
    checkpoints: evaluating such an agent later needs them again (``ppokit.evaluate(agent, env)``)."""

    factory: EnvFactory | None = None
    wrappers: tuple[Wrapper, ...] = ()

    @property
    def custom(self) -> bool:
        """Whether envs come from user code (then every sub-env is made separately)."""
        return self.factory is not None or bool(self.wrappers)

    def make(self, env_id: str, kwargs: dict, render_mode: str | None = None, pixels: PixelsConfig | None = None,
             training: bool = False) -> gym.Env:
        """One env, then the ``wrappers``, then the image preprocessing of ``pixels``
        (:mod:`ppokit.pixels`; its training-only wrappers with ``training``). A factory's errors pass
        through as they are (its code is the user's)."""
        if self.factory is not None:
            env = self.factory()
            if not isinstance(env, gym.Env):
                raise ConfigError(f"the env factory returned {type(env).__name__}, not a gymnasium.Env")
        else:
            if pixels is not None:
                kwargs = pixel_wrappers.make_kwargs(pixels, env_id, kwargs, self.made_from_id)
            env = make_env(env_id, kwargs, render_mode=render_mode)
        for wrapper in self.wrappers:
            env = wrapper(env)
        if pixels is None:
            return env
        try:
            return pixel_wrappers.wrap(env, pixels, env_id, training, self.made_from_id)
        except ConfigError:
            env.close()
            raise
        except ENV_FAILURES as error:  # a wrapper refusing the env (a missing opencv, a bad space): one line
            env.close()
            raise creation_error(env_id, error) from None

    @property
    def made_from_id(self) -> bool:
        """Whether ppokit makes the env from its id (no factory): only then does ``pixels.preprocess=auto``
        preprocess ``ALE/`` envs (a factory's env is the user's, preprocessed or not)."""
        return self.factory is None


FROM_ENV_ID = EnvSource()  # the usual source: gymnasium.make(cfg.env_id, **cfg.env.kwargs)


def agent_pixels(agent: Any) -> PixelsConfig | None:
    """The image preprocessing an agent was trained with (its config's ``pixels``; None: an agent
    built without a config, which gets none)."""
    return getattr(getattr(agent, "config", None), "pixels", None)


def source_for(env: str | EnvFactory, wrappers: Sequence[Wrapper] = ()) -> tuple[str, EnvSource]:
    """``(env_id, source)`` for what a user passed to ``ppokit.train``: an env id or a callable.

    A callable's env id is its env's registered id (``env.spec.id``) or else its class name; an
    env *instance* is refused (every sub-env needs a new one)."""
    if isinstance(env, (gym.Env, gym.vector.VectorEnv)):
        raise ConfigError(
            f"env: got an env instance ({type(env).__name__}); pass its id or a callable that returns a new env, "
            "e.g. lambda: MyEnv() (ppokit makes one per sub-env)"
        )
    if isinstance(env, str):
        return env, EnvSource(None, tuple(wrappers))
    if not callable(env):
        raise ConfigError(
            f"env: expected an env id or a callable that returns a gymnasium.Env, got {type(env).__name__}"
        )
    source = EnvSource(env, tuple(wrappers))
    probe = source.make("", {})
    try:
        env_id = probe.spec.id if probe.spec is not None else type(probe.unwrapped).__name__
    finally:
        probe.close()
    return env_id, source


def _sub_env_factory(env_id: str, index: int, kwargs: dict, source: EnvSource, pixels: PixelsConfig) -> EnvFactory:
    parent = os.getpid()

    def make() -> gym.Env:
        if os.getpid() != parent:
            # An AsyncVectorEnv worker: Ctrl-C and SIGTERM are the parent's to handle (it finishes
            # the iteration, saves and then closes the workers); a worker dying first would turn
            # an interruption into a failure.
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return ReportErrors(source.make(env_id, kwargs, pixels=pixels, training=True), env_id, index)

    return make


def process_seed(seed: int, rank: int, envs_per_process: int) -> int:
    """Seed of this process's first env (sub-env ``i`` gets this + i): rank r's envs are the envs
    ``r * envs_per_process ...`` of one process with all the envs, so K processes step the same
    envs, seeded alike, as one process does."""
    return seed + rank * envs_per_process


def make_envs(cfg: Config, rank: int = 0, world_size: int = 1, num_envs: int | None = None,
              seed: int | None = None, source: EnvSource = FROM_ENV_ID) -> VectorEnvs:
    """The vector env of process ``rank``: ``num_envs // world_size`` sub-envs.

    Backend: ``env.vector=auto`` uses gymnasium's own vectorized env when the env ships one
    (NEXT_STEP autoreset) and SyncVectorEnv otherwise (SAME_STEP); ``sync``/``async`` force those.
    Envs from a ``source`` with a factory or wrappers, and envs with image preprocessing
    (``cfg.pixels``, :mod:`ppokit.pixels`), are always made one by one (SAME_STEP).
    ``envpool``: EnvPool's envs (NEXT_STEP, :func:`make_envpool`).
    """
    n = num_envs if num_envs is not None else cfg.rollout.num_envs // world_size
    kwargs = dict(cfg.env.kwargs)
    mode = cfg.env.vector
    preprocess = pixel_wrappers.mode_for(cfg.pixels, cfg.env_id, source.made_from_id)
    if mode == "envpool":
        return make_envpool(cfg, n, process_seed(cfg.seed if seed is None else seed, rank, n), source, preprocess)
    try:
        spec = None if source.factory is not None else ensure_registered(cfg.env_id)
        if (mode == "auto" and spec is not None and spec.vector_entry_point is not None and not source.custom
                and preprocess == "none"):
            env = gym.make_vec(cfg.env_id, num_envs=n, vectorization_mode="vector_entry_point", **kwargs)
        else:
            factories = [_sub_env_factory(cfg.env_id, i, kwargs, source, cfg.pixels) for i in range(n)]
            if mode == "async":
                env = gym.vector.AsyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)
            else:
                env = gym.vector.SyncVectorEnv(factories, autoreset_mode=AutoresetMode.SAME_STEP)
    except ConfigError:
        raise
    except ENV_FAILURES as error:  # missing extra, bad kwargs, a broken env: one line
        raise creation_error(cfg.env_id, error) from None
    autoreset = env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP)
    # The rollout implements exactly these two modes; anything else would be learned wrongly.
    assert autoreset in (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP), autoreset
    check_spaces(cfg.env_id, env.single_observation_space, env.single_action_space)
    return VectorEnvs(env, cfg.env_id, autoreset, process_seed(cfg.seed if seed is None else seed, rank, n),
                      game_scores=preprocess != "none")


# ALE's settings that EnvPool's Atari envs take under the same name (from env.kwargs, else the
# gymnasium id's defaults: v5 has sticky actions, repeat_action_probability 0.25, where EnvPool's default is 0).
ALE_SETTINGS = ("repeat_action_probability", "full_action_space", "mode", "difficulty")
FRAMES_PER_GAME = "max_num_frames_per_episode"  # ALE's time limit in frames (v5: 108,000, 30 minutes of play)


class EnvPoolVector(gym.vector.VectorWrapper):
    """An EnvPool vector env (NEXT_STEP autoreset) with the spaces of the gymnasium env of the same id.

    EnvPool's MuJoCo envs report float64 action spaces where gymnasium's are float32: the agent is
    built on (and its checkpoint names) the gymnasium spaces, so that ``ppokit eval``/``record`` on
    gymnasium's single envs accept it. EnvPool's state lives in C++: :mod:`ppokit.env_state` cannot
    capture it (``captures_state``), so a resumed run starts new episodes.
    """

    captures_state = False

    def __init__(self, env: gym.vector.VectorEnv, observation_space: gym.Space, action_space: gym.Space):
        super().__init__(env)
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.observation_space = gym.vector.utils.batch_space(observation_space, env.num_envs)
        self.action_space = gym.vector.utils.batch_space(action_space, env.num_envs)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        # EnvPool seeds its envs when they are made (make_envpool); reset(seed=...) would be ignored.
        return self.env.reset()


class AtariGames(EnvPoolVector):
    """EnvPool's Atari envs, reporting each full game that ends as the gymnasium path's training envs
    do (``infos["final_info"]["game"]``: ``r`` raw scores, ``l`` lengths in agent steps, ``[N]``
    arrays valid where ``infos["final_info"]["_game"]``; read by :mod:`ppokit.rollout`).

    A game ends when ALE says so (``info["terminated"]``; a lost life only ends the learner's
    episode) or at the time limit. Its score sums EnvPool's raw rewards (``info["reward"]``, before
    the clipping the learner gets); its length is EnvPool's ``info["elapsed_step"]``."""

    def __init__(self, env: gym.vector.VectorEnv, observation_space: gym.Space, action_space: gym.Space):
        super().__init__(env, observation_space, action_space)
        self.scores = np.zeros(env.num_envs)  # [N] raw score of each sub-env's game so far

    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        self.scores[:] = 0.0
        return super().reset()

    def step(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, info = self.env.step(actions)
        self.scores += info["reward"]  # 0 on a reset step
        over = (terminated & info["terminated"].astype(bool)) | truncated
        if over.any():
            games = {"r": self.scores.copy(), "l": info["elapsed_step"].astype(np.int64)}
            info = {**info, "final_info": {pixel_wrappers.GAME_KEY: games, f"_{pixel_wrappers.GAME_KEY}": over}}
            self.scores[over] = 0.0
        return obs, rewards, terminated, truncated, info


def envpool_ids() -> list[str]:
    """The env ids EnvPool provides (ConfigError with the pip command when envpool is missing)."""
    envpool = require("envpool", "envpool", "env.vector=envpool")
    return list(envpool.list_all_envs())


def envpool_id(env_id: str, preprocess: str) -> str:
    """EnvPool's id for ``env_id`` (``ALE/Pong-v5`` -> ``Pong-v5``; others: the same id), or a
    ConfigError naming what EnvPool has."""
    ids = envpool_ids()
    name = env_id.removeprefix("ALE/")
    if env_id.startswith("ALE/") and preprocess != "atari":
        raise ConfigError(f"env.vector=envpool: Atari ({quote(env_id)}) runs with pixels.preprocess=atari only "
                          f"(EnvPool preprocesses the frames itself), not {preprocess}; use env.vector=auto or async")
    if name in ids:
        return name
    base = name.rsplit("-v", 1)[0]
    versions = sorted(i for i in ids if i.rsplit("-v", 1)[0] == base)
    offer = (f"envpool provides {', '.join(versions)}" if versions
             else f"envpool has no such env{did_you_mean(name, ids)}; see envpool.list_all_envs()")
    raise ConfigError(f"env.vector=envpool: envpool has no {quote(env_id)}: {offer} (or use env.vector=auto)")


def atari_options(env_id: str, pixels: PixelsConfig, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``envpool.make`` options for the training envs of ``env_id`` with the ``atari`` preprocessing of
    ``pixels`` and ALE's settings in ``kwargs`` (``env.kwargs``): the same game, frames and
    training-only wrappers as :func:`ppokit.pixels.wrap` gives the gymnasium env.

    EnvPool presses FIRE after a lost life only where the lost life ends the learner's episode:
    ``pixels.fire_reset`` needs ``pixels.episodic_life`` here."""
    accepted = (*ALE_SETTINGS, FRAMES_PER_GAME, "frameskip")
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"env.kwargs: {', '.join(unknown)} cannot be given to envpool's Atari envs (accepted: "
                          f"{', '.join(accepted)}); use env.vector=auto or async")
    if kwargs.get("frameskip", 1) != 1:
        raise ConfigError(f"env.kwargs.frameskip={kwargs['frameskip']!r}: with env.vector=envpool the frames are "
                          "skipped by pixels.frame_skip (max-pooling the last two); drop env.kwargs.frameskip")
    if pixels.fire_reset and not pixels.episodic_life:
        raise ConfigError("pixels.fire_reset=true with pixels.episodic_life=false: EnvPool presses FIRE after a lost "
                          "life only when the lost life ends the episode; set pixels.episodic_life=true or "
                          "pixels.fire_reset=false, or use env.vector=auto or async")
    ale = {**ensure_registered(env_id).kwargs, **kwargs}
    frames = int(ale.get(FRAMES_PER_GAME) or 108_000)
    return {
        **{name: ale[name] for name in ALE_SETTINGS if ale.get(name) is not None},
        "max_episode_steps": -(-frames // pixels.frame_skip),  # agent steps
        "img_height": pixels.size, "img_width": pixels.size, "gray_scale": pixels.grayscale,
        "stack_num": pixels.frame_stack, "frame_skip": pixels.frame_skip, "noop_max": pixels.noop_max,
        "use_fire_reset": pixels.fire_reset, "episodic_life": pixels.episodic_life, "reward_clip": pixels.clip_reward,
    }


def make_envpool(cfg: Config, n: int, seed: int, source: EnvSource, preprocess: str) -> VectorEnvs:
    """``n`` EnvPool envs of ``cfg.env_id`` seeded with ``seed`` (``env.vector=envpool``).

    The id must be one EnvPool shares with gymnasium (CartPole-v1, Pendulum-v1, HalfCheetah-v4,
    Hopper-v5, ...) or an Atari game with ``pixels.preprocess=atari``: the spaces, and evaluation,
    come from gymnasium's env of that id. ``env.kwargs`` go to ``envpool.make`` (e.g.
    ``max_episode_steps``); for Atari, see :func:`atari_options`."""
    if source.custom:
        raise ConfigError("env.vector=envpool makes envs from an env id only; an env factory or wrappers need "
                          "env.vector=auto, sync or async")
    if preprocess not in ("none", "atari"):
        raise ConfigError(f"env.vector=envpool does not apply ppokit's image preprocessing (pixels.preprocess="
                          f"{preprocess}); use env.vector=auto or async")
    name = envpool_id(cfg.env_id, preprocess)
    atari = preprocess == "atari"
    options = atari_options(cfg.env_id, cfg.pixels, cfg.env.kwargs) if atari else cfg.env.kwargs
    import envpool

    probe = (FROM_ENV_ID.make(cfg.env_id, cfg.env.kwargs, pixels=cfg.pixels, training=True) if atari
             else make_env(cfg.env_id, cfg.env.kwargs))
    try:
        observation_space, action_space = probe.observation_space, probe.action_space
    finally:
        probe.close()
    with _quiet_gym():  # EnvPool's Box bounds are float64: gymnasium warns when casting them
        try:
            pool = envpool.make(name, env_type="gymnasium", num_envs=n, seed=seed, **options)
        except TypeError as error:
            raise ConfigError(f"env.kwargs: envpool's {quote(name)} does not accept them: "
                              f"{first_line(error)}") from None
        except ENV_FAILURES as error:
            raise creation_error(cfg.env_id, error) from None
        for what, ours, theirs in (("observation", observation_space, pool.single_observation_space),
                                   ("action", action_space, pool.single_action_space)):
            if type(ours) is not type(theirs) or ours.shape != theirs.shape:
                pool.close()
                raise ConfigError(f"env.vector=envpool: envpool's {quote(name)} has {what} space {theirs}, "
                                  f"gymnasium's {quote(cfg.env_id)} has {ours}; use env.vector=auto")
    check_spaces(cfg.env_id, observation_space, action_space)
    vector = (AtariGames if atari else EnvPoolVector)(pool, observation_space, action_space)  # type: ignore[arg-type]
    return VectorEnvs(vector, cfg.env_id, AutoresetMode.NEXT_STEP, seed, game_scores=atari)


class _quiet_gym:
    def __enter__(self) -> None:
        self.saved = gym.logger.min_level
        gym.logger.min_level = gym.logger.ERROR + 10

    def __exit__(self, *exc: Any) -> None:
        gym.logger.min_level = self.saved

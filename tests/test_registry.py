"""An algorithm is declared once (its AlgoSpec), and adding one is one new file."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from ppokit.algos import ALGOS, discover
from ppokit.cli import build_parser
from ppokit.config import Config, ConfigError, config_class, from_dict, to_dict, validate
from ppokit.metrics import columns_for
from tests.test_algo_family import make_agent, make_batch

NEW_ALGORITHM = '''
"""A toy algorithm: PPO's machinery with the plain policy-gradient loss, in one file."""
from dataclasses import dataclass

from ppokit.algos.common import value_loss
from ppokit.algos.minibatch import MinibatchActorCritic, MinibatchConfig, check_minibatch_section
from ppokit.algos.registry import AlgoSpec
from ppokit.batch import policy_advantages, weighted_mean
from ppokit.validation import positive


@dataclass
class PlainPGConfig(MinibatchConfig):
    scale: float = 2.0


def check_section(section, where):
    check_minibatch_section(section, where)
    positive(section.scale, f"{where.name}.scale")


class PlainPG(MinibatchActorCritic):
    def __init__(self, agent, cfg, path):
        super().__init__(agent, cfg.plain_pg, path)

    def loss(self, head, policy_out, values, minibatch, hyper):
        log_probs = head.log_prob(policy_out, minibatch.actions)
        advantages = policy_advantages(minibatch, self.cfg.norm_adv)
        policy_loss = -self.cfg.scale * weighted_mean(log_probs * advantages, minibatch.weights)
        return policy_loss + value_loss(values, minibatch, None), {"policy_loss": policy_loss.detach()}


ALGORITHM = AlgoSpec(name="plain-pg", section="plain_pg", config=PlainPGConfig, make=PlainPG,
                     check=check_section, metrics=("grad_norm", "plain_pg_extra"))
'''


def test_each_algorithm_is_declared_once_and_used_everywhere():
    assert sorted(ALGOS) == ["ppo", "ppo-kl", "trpo", "vpg"]
    train = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
                 if a.dest == "algo")
    assert list(train.choices) == list(ALGOS)
    sections = to_dict(Config())
    for spec in ALGOS.values():
        assert sections[spec.section] == to_dict(spec.config())
        assert set(spec.metrics) <= set(columns_for(spec))
        assert Config(algo=spec.name).algo_section() is not None


@pytest.mark.parametrize("field, value", [("trpo.max_kl", -1.0), ("ppo_kl.kl_target", 0.0), ("vpg.baseline", "x")])
def test_every_section_is_checked_by_its_own_spec(field, value):
    section, name = field.split(".")
    data = to_dict(Config())
    data[section][name] = value
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        validate(from_dict(data))


def test_a_new_algorithm_is_one_new_file(tmp_path, monkeypatch):
    package = tmp_path / "more_algos"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "plain_pg.py").write_text(textwrap.dedent(NEW_ALGORITHM))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover("more_algos", [str(package)])
    assert list(found) == ["plain-pg"]
    spec = found["plain-pg"]
    registry = {**ALGOS, **found}

    config_type = config_class(registry)
    cfg = from_dict({"algo": "plain-pg", "plain_pg": {"scale": 3.0, "minibatch_size": 32}}, config_type)
    assert cfg.plain_pg.scale == 3.0 and cfg.ppo.clip_coef == 0.2  # the new section beside the others
    with pytest.raises(ConfigError, match="plain_pg.scael"):
        from_dict({"plain_pg": {"scael": 1.0}}, config_type)
    assert columns_for(spec)[-1] == "plain_pg_extra"

    agent = make_agent()
    before = [p.detach().clone() for p in agent.parameters()]
    stats = spec(agent, cfg).update(make_batch(agent), progress=0.0)
    assert {"policy_loss", "learning_rate", "grad_norm"} <= set(stats)
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.parameters()))
    sys.modules.pop("more_algos.plain_pg", None)
    sys.modules.pop("more_algos", None)

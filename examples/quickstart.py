"""Train PPO on CartPole-v1, save, reload and evaluate: the Python API end to end.

Run it as often as you like: each run gets its own folder under runs/.
"""

import gymnasium as gym

import ppokit

agent = ppokit.train("CartPole-v1", algo="ppo", total_steps=100_000, seed=0)
print(f"run folder {agent.run_dir}: {agent.summary['total_steps']:,} steps, solved at step "
      f"{agent.summary['solved_at_step']}")

env = gym.make("CartPole-v1")
obs, _ = env.reset(seed=123)
print("action:", agent.act(obs, deterministic=True), "value:", agent.value(obs))

agent.save(agent.run_dir / "exported_agent")
agent = ppokit.load(agent.run_dir / "exported_agent")
result = ppokit.evaluate(agent, "CartPole-v1", episodes=10)
print(f"mean return {result['mean']:.1f} +/- {result['std']:.1f} over {len(result['returns'])} episodes")

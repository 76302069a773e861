"""Papers' results reproduced by one command: ``ppokit reproduce EXPERIMENT`` (docs/reproductions.md).

- :mod:`.table1`: the PPO paper's Table 1 as data (settings, envs, the paper's numbers).
- :mod:`.runs`: one ordinary run folder per (env, setting, seed), ``ppokit train`` subprocesses, resumable.
- :mod:`.scores`: a run's score, the random policy's, the per-env normalization.
- :mod:`.report`: rliable's bootstrap intervals, the Markdown table, results.json, learning curves.
- :mod:`.experiment`: all of it in order (``reproduce_table1``).

Importing this package is cheap (the CLI lists the experiments); the modules load what they need.
"""

EXPERIMENTS = ("ppo-table1",)

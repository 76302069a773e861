"""``python -m ppokit`` (so that ``torchrun -m ppokit train ...`` works).

``python -m`` puts the current folder first on ``sys.path``; ppokit drops it, so that a ``.py``
file planted in a run or checkpoint folder (``cd run && python -m ppokit eval .``) is never
imported in place of a library that ppokit imports later. An env module typed on the command line
(``ppokit train my_envs:MyEnv-v0``) is still found there (see ``ppokit.cli``).
"""

import os
import sys

if sys.path and not sys.flags.safe_path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from ppokit.cli import run  # noqa: E402

if __name__ == "__main__":
    run()

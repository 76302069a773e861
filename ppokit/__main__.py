"""``python -m ppokit`` (so that ``torchrun -m ppokit train ...`` works)."""

from ppokit.cli import run

if __name__ == "__main__":
    run()

"""``python3 -m sims.bench_secagg``: the command line (cli.py), with the exit codes of the simulations."""

from sims.bench_secagg.cli import main
from sims.common import entry_point

if __name__ == "__main__":
    entry_point("bench_secagg", main)

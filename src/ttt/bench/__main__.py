"""`python -m ttt.bench ...`: the same as `ttt bench ...`."""

import argparse
import sys

from .cli import add_arguments, main
from .spec import SpecError


def entry() -> int:
    parser = argparse.ArgumentParser(prog="python -m ttt.bench", description="benchmark TTT models against baselines")
    add_arguments(parser)
    args = parser.parse_args()
    try:
        return main(args, sys.argv[1:])
    except SpecError as err:
        parser.error(str(err))


if __name__ == "__main__":
    sys.exit(entry())

"""`python -m trainer {prep,config,train,report,install,setup-sd-scripts}`.

Each command module registers its own subparser; user errors print one sentence and exit
non-zero, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from vidstyle.errors import run_command


def build_parser() -> argparse.ArgumentParser:
    from . import commands, prep

    parser = argparse.ArgumentParser(
        prog="python -m trainer",
        description="Train a character or style LoRA with kohya sd-scripts: prep, config, train, report, install.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    prep.register(sub)
    commands.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())

"""One sub-command's parser, made the same way for every `orch` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def command(
    sub, name: str, run: Callable[[argparse.Namespace], int], *, help: str, epilog: str, **kw
) -> argparse.ArgumentParser:
    """Add `orch NAME`: its help line, its examples (kept as written), and what runs it."""
    parser = sub.add_parser(
        name,
        help=help,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kw,
    )
    parser.set_defaults(run=run)
    return parser

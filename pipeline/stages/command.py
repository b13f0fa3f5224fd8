"""The command line every stage shares: its options, and bad input as one line and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from pipeline.errors import UserError


def stage_args(argv: list[str] | None, doc: str, *names: str, optional: tuple[str, ...] = (),
               many: tuple[str, ...] = (), types: dict | None = None) -> argparse.Namespace:
    """The command line of a stage: ``--params`` (the params file), one required option per
    name (its input and output paths, e.g. ``--data``, ``--out``), the ``optional`` ones, those
    of ``many`` that take one or more paths (``--metrics a.json b.json``, one per model, in the
    same order), and ``--log`` (a log file)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", required=True, help="params.yaml")
    for name in (*names, *optional):
        parser.add_argument(f"--{name}", required=name in names, type=(types or {}).get(name, str))
    for name in many:
        parser.add_argument(f"--{name}", required=True, nargs="+")
    parser.add_argument("--log", help="log file, besides stderr")
    return parser.parse_args(argv)


def cli(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a stage's entry point: a UserError becomes one line on stderr and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper

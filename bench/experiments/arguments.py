"""Argument checks shared by the bench and the developer sweeps: each returns one line (what is wrong) or None,
before anything runs, and the parser itself answers a malformed value in one `error:` line, exit 2."""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad value is one line `error: ...` and exit 2 (argparse's own prints the usage first)."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see --help)\n")


def int_list(low: int = 0):
    """An argparse type: distinct integers >= low, comma-separated (e.g. 0,1,2)."""
    def parse(text: str) -> list[int]:
        parts = [x.strip() for x in text.split(",")]
        if not all(x.lstrip("-").isdigit() for x in parts):
            raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated integers")
        values = [int(x) for x in parts]
        if min(values) < low or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"{text!r}: expected distinct integers >= {low}")
        return values
    parse.__name__ = "integer list"
    return parse


def minimum_problem(*checks: tuple[str, float, float]) -> str | None:
    """(flag, value, lowest allowed) for each numeric option; NaN is never allowed."""
    for flag, value, low in checks:
        if value is not None and not value >= low:
            return f"{flag} must be >= {low}, got {value}"
    return None


def fraction_problem(flag: str, value: float) -> str | None:
    return None if 0 < value <= 1 else f"{flag} must be in (0, 1], got {value}"


def mixes_problem(flag: str, mixes: str) -> str | None:
    """Comma-separated top:random pairs, top in (0, 1] and random in [0, 1]."""
    for mix in mixes.split(","):
        parts = mix.split(":")
        try:
            top, rand = (float(x) for x in parts) if len(parts) == 2 else (math.nan, math.nan)
        except ValueError:
            top = rand = math.nan
        if not (0 < top <= 1 and 0 <= rand <= 1):
            return f"{flag}: {mix!r} is not top:random with top in (0, 1] and random in [0, 1] (e.g. 0.3:0.1)"
    return None


def out_problem(out: str | Path, pools: list[str | Path], inputs: list[str | Path] = ()) -> str | None:
    """--out is clear of every pool (neither the pool folder, inside it, nor holding it) and of the other inputs."""
    from sfcomp.errors import BadInputError
    from sfcomp.guard import check_clear_of_pool, check_outputs, pool_inputs

    try:
        for pool in pools:
            check_clear_of_pool(out, pool, what="--out", choose="a folder outside it")
        check_outputs([out], [i for p in pools for i in pool_inputs(p)] + list(inputs), what="--out", kind="dir")
    except BadInputError as e:
        return str(e)
    return None


def refuse(problem: str | None) -> int | None:
    """Print the problem as the one error line; 2 to exit with, or None when there is none."""
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    return None

"""click types that refuse in sfcomp's one-line form: paths (`error: FILE: problem`, exit 2) and CPU counts."""
from __future__ import annotations

import os
import stat

import click

from ..errors import BadInputError


class PathParam(click.Path):
    """A click.Path whose refusals (missing, a folder given for a file, a file for a folder) name the path first."""

    def convert(self, value, param, ctx):
        is_dash = self.file_okay and self.allow_dash and value in ("-", b"-")
        if not is_dash:
            path = os.fsdecode(value)
            where = "" if param is None else f" ({param.opts[0] if isinstance(param, click.Option) else param.human_readable_name})"
            try:
                mode = os.stat(path).st_mode
            except OSError:
                mode = None
                if self.exists:
                    raise BadInputError(path, "does not exist" + where) from None
            if mode is not None and not self.dir_okay and stat.S_ISDIR(mode):
                raise BadInputError(path, "is a folder, expected a file" + where)
            if mode is not None and not self.file_okay and not stat.S_ISDIR(mode):
                raise BadInputError(path, "is a file, expected a folder" + where)
        return super().convert(value, param, ctx)


def per_core(low: int = 1, factor: int = 4) -> click.IntRange:
    """A count of CPU threads or processes: from `low` to `factor` x this machine's cores. More is never faster,
    and a typo (100000) would otherwise exhaust the machine's threads before any input is read."""
    return click.IntRange(low, factor * (os.cpu_count() or 1))


IO_THREADS = click.IntRange(1, 1024)  # download threads wait on the network, not the CPU: not bound to the cores

"""The `sfcomp` command: a thin click layer. Subcommands are imported only when run, so `--help` is fast.

Each entry maps a command name to ("module:function", short help). Logic lives in the library modules.

`LazyGroup.invoke` is the one error boundary: bad input (BadInputError, and whatever a reader lets out for a broken
or unreadable file: OSError, decode, JSON, numpy/arrow/zip/tar format errors; disk full on a write) becomes one line
`error: FILE: problem` and exit 2 (sfcomp.errors.error_line); Ctrl-C is `interrupted`, exit 130; SIGTERM (a
scheduler's stop, `kill`) is `terminated`, exit 143, after the same clean-up (temp files removed, as for Ctrl-C;
not under torchrun, which manages its workers; a killed run resumes either way); anything else is a bug and keeps
its traceback.
SFCOMP_DEBUG=1 shows the traceback of every error.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import traceback

import click

from ..errors import error_line

COMMANDS: dict[str, tuple[str, str]] = {
    "validate-subset": ("sfcomp.cli.subset_cmds:validate_subset", "Check a subset .npy against DataComp's rules and a pool."),
    "download": ("sfcomp.cli.pool_cmds:download", "Download a pool with img2dataset using DataComp's settings (resumable)."),
    "make-pool": ("sfcomp.cli.pool_cmds:make_pool", "Build a noisy DataComp-format demo pool from a real dataset."),
    "round": ("sfcomp.cli.loop_cmds:round_cmd", "Run one self-filtering round: train, score every sample, select."),
    "run": ("sfcomp.cli.loop_cmds:run_cmd", "Chain self-filtering rounds; resumes from the last finished round."),
    "export-subset": ("sfcomp.cli.loop_cmds:export_subset", "Scores -> DataComp subset (top + random), with a JSON sidecar."),
    "scores-to-parquet": ("sfcomp.cli.loop_cmds:scores_to_parquet", "Convert a score file to parquet for pandas users."),
    "baseline": ("sfcomp.cli.baseline_cmds:baseline", "Apply one of DataComp's baseline filters to pool metadata."),
    "reshard": ("sfcomp.cli.eval_cmds:reshard", "Reshard a pool to a subset for training (DataComp resharder semantics)."),
    "train-eval": ("sfcomp.cli.eval_cmds:train_eval", "Train a CLIP at a fixed scale on a subset and evaluate it."),
    "evaluate": ("sfcomp.cli.eval_cmds:evaluate", "Zero-shot classification / retrieval of a checkpoint on wds eval sets."),
    "compare": ("sfcomp.cli.eval_cmds:compare", "Table and plot of methods side by side from eval results."),
}


def _debug() -> bool:
    """SFCOMP_DEBUG=1: let every error through with its full traceback."""
    return os.environ.get("SFCOMP_DEBUG", "") not in ("", "0")


def _logger_levels() -> tuple[int, dict[str, int]]:
    return logging.root.level, {name: lg.level for name, lg in logging.root.manager.loggerDict.items()
                                if isinstance(lg, logging.Logger)}


def _restore_logger_levels(levels: tuple[int, dict[str, int]]) -> None:
    # open_clip_train's setup_logging sets every logger that exists to INFO (TorchDynamo's included); give
    # the next command run in this process the levels it had
    root, named = levels
    logging.root.setLevel(root)
    for name, level in named.items():
        logging.getLogger(name).setLevel(level)


def _drop_frames(e: BaseException) -> None:
    """Clear the locals of the finished frames in `e`'s traceback and in those of the exceptions chained to it."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e.__traceback__ = None
        e = e.__cause__ or e.__context__


# click >= 8.2 raises this for a bare `sfcomp` (8.1 printed the help and exited 0, as this does)
_NO_ARGS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def _usage_error(e: click.UsageError) -> None:
    """A value or option click refuses: one line too, not Usage/Try/Error; exit 2."""
    if isinstance(e, _NO_ARGS) and e.ctx is not None:
        click.echo(e.ctx.get_help())
        sys.exit(0)
    where = e.ctx.command_path if e.ctx is not None else "sfcomp"
    click.echo(f"error: {e.format_message().rstrip('.')} (see `{where} --help`)", err=True)
    sys.exit(2)


class Terminated(BaseException):
    """SIGTERM, raised in the process that ran the command. A BaseException, as KeyboardInterrupt is, so that no
    `except Exception` swallows it and the writers' clean-up (`except BaseException`, `finally`) runs."""


def _on_sigterm(pid: int):
    def handler(signum, frame):
        if os.getpid() != pid:  # a forked worker (DataLoader, multiprocessing) ends as it did before
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise Terminated
    return handler


@contextlib.contextmanager
def _sigterm_raises():
    # torchrun stops a job's other workers with SIGTERM, then SIGKILL after a grace period: a worker blocked in a
    # collective would run a Python handler only after it, so under torchrun SIGTERM keeps its default (kills
    # at once; the job resumes from its workdir). Signal handlers live in the main thread only.
    if "TORCHELASTIC_RUN_ID" in os.environ or threading.current_thread() is not threading.main_thread():
        yield
        return
    before = signal.signal(signal.SIGTERM, _on_sigterm(os.getpid()))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class LazyGroup(click.Group):
    def make_context(self, info_name, args, parent=None, **extra):
        try:  # the group's own options (`sfcomp --bogus`) are parsed here, outside invoke
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as e:
            if _debug():
                raise
            _usage_error(e)

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        target, short = COMMANDS[name]
        module, func = target.split(":")
        try:
            cmd = getattr(importlib.import_module(module), func)
        except (ImportError, AttributeError) as e:
            if ctx.resilient_parsing or "--help" in sys.argv[1:2]:
                return click.Command(name, help=f"{short} (unavailable: {e})", short_help=short)
            raise
        cmd.short_help = short
        return cmd

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        levels = _logger_levels()
        try:
            with _sigterm_raises():
                return super().invoke(ctx)
        except click.UsageError as e:
            if _debug():
                raise
            _usage_error(e)
        except KeyboardInterrupt:
            if _debug():
                raise
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Terminated:
            if _debug():
                raise
            click.echo("terminated", err=True)
            sys.exit(128 + signal.SIGTERM)
        except Exception as e:  # sorted below: input problems become one line, the rest re-raise
            try:
                line = error_line(e)
            except Exception:  # never hide the original error behind one of ours
                line = None
            if line is None or _debug():
                raise
            _drop_frames(e)
        finally:
            _restore_logger_levels(levels)
        # outside the handler, with the failed command's frames cleared and collected now: left to the
        # interpreter's last garbage collection, what they held (pyarrow tables and buffers read on a thread
        # pool) is freed after pyarrow's threads are torn down, and about one exit in ten then aborts
        # ("terminate called without an active exception", exit 134) after the error line
        gc.collect()
        click.echo(line, err=True)
        sys.exit(2)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sfcomp")
def main() -> None:
    """sfcomp: curate image-text pools for CLIP by iterative self-filtering (DataComp formats)."""


if __name__ == "__main__":
    main()

"""`sfcomp baseline NAME ...`: DataComp's baseline filters (thin layer over sfcomp.baselines.apply).

NAME's choices and the flags come from the baseline registry (sfcomp.baselines.registry) each time the command
parses or prints help, so a baseline registered at run time (a plugin, a test's toy) has its name and its own
flags too.
"""
from __future__ import annotations

import click


def _option(opt) -> click.Option:
    kind = click.Choice(list(opt.choices)) if opt.choices else opt.type
    return click.Option([opt.flag], type=kind, multiple=opt.multiple, default=() if opt.multiple else None,
                        help=opt.help)


_CACHE: dict[tuple, list[click.Parameter]] = {}


def _params() -> list[click.Parameter]:
    """The command's parameters for the registry as it is now (the same objects while it does not change)."""
    from sfcomp.baselines.registry import BASELINES, all_options

    options = all_options()
    key = (tuple(BASELINES), tuple(map(id, options)))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = _build(list(BASELINES), options)
    return _CACHE[key]


def _build(names: list[str], options: list) -> list[click.Parameter]:
    return [
        click.Argument(["name"], type=click.Choice(names)),
        click.Option(["--metadata-dir"], required=True,
                     help="Pool metadata folder (parquet + npz), local or fsspec URL."),
        click.Option(["--save-path"], required=True, help="Output subset .npy; the sidecar goes to <save-path>.json."),
        click.Option(["--num-workers"], type=int, default=None,
                     help="Parallel processes, one parquet each [cpu count]."),
        *(_option(o) for o in options),
        click.Option(["--allow-empty"], is_flag=True, help="Write the subset even when the filter keeps no sample."),
    ]


class _RegistryCommand(click.Command):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        help_option = self.get_help_option(ctx)
        return [*_params(), *([help_option] if help_option is not None else [])]


@click.command("baseline", cls=_RegistryCommand)
def baseline(name: str, metadata_dir: str, save_path: str, num_workers: int | None, allow_empty: bool,
             **flags) -> None:
    """Apply DataComp baseline NAME to a pool's metadata and write a DataComp subset (.npy) + JSON sidecar."""
    from dataclasses import fields

    from sfcomp.baselines.apply import BaselineArgs, run_baseline

    named = {f.name for f in fields(BaselineArgs)}
    extra = {k: v for k, v in flags.items() if k not in named and v is not None and v != ()}
    side = run_baseline(BaselineArgs(
        name=name, metadata_dir=metadata_dir, save_path=save_path, num_workers=num_workers, allow_empty=allow_empty,
        extra=extra, **{k: v for k, v in flags.items() if k in named}))
    click.echo(f"{save_path}: {side['kept']} of {side['pool_rows']} uids ({100 * side['kept_fraction']:.2f}%); "
               f"sidecar {save_path}.json")

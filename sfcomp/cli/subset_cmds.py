"""CLI: subset files."""
from __future__ import annotations

import json

import click

from .paths import PathParam


@click.command("validate-subset")
@click.argument("subset", type=PathParam(dir_okay=False))
@click.option("--pool", "pool", type=str, default=None, help="Pool folder or URL (metadata/ and shards/).")
@click.option("--allow-duplicates", is_flag=True, help="Repeated uids are upsampling, not an error.")
@click.option("--no-shards", is_flag=True, help="Check metadata membership only, skip the shards.")
@click.option("--allow-empty", is_flag=True, help="An empty subset is not an error.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def validate_subset(subset: str, pool: str | None, allow_duplicates: bool, no_shards: bool, allow_empty: bool,
                    as_json: bool) -> None:
    """Check SUBSET's dtype, sort order, duplicates, and membership in POOL; exit 2 with a reason on a violation."""
    from ..validate import validate_subset as run

    r = run(subset, pool, allow_duplicates=allow_duplicates, check_shards=not no_shards, allow_empty=allow_empty)
    if as_json:
        click.echo(json.dumps(r.as_dict()))
        return
    line = f"ok: {subset}: requested {r.requested} ({r.unique} unique)"
    if r.in_metadata is not None:
        line += f", in metadata {r.in_metadata}/{r.pool_metadata}"
    if r.present is not None:
        pct = 100.0 * r.present / max(r.requested, 1)
        line += f", present in shards {r.present} ({pct:.1f}%)"
    if r.sidecar is not None:
        line += ", its sidecar's output_sha256 matches"
    click.echo(line)

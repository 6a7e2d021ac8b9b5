"""DataComp's download step: img2dataset over a url parquet, with DataComp's settings, resumable.

img2dataset runs in a child Python process (`python -m sfcomp.download SPEC.json`): it needs to run under
`__main__` (it spawns workers) and it installs a SIGINT handler. Resume: img2dataset's
incremental_mode="incremental" skips every shard whose `{:08d}_stats.json` exists (it writes that file last,
after the tar and the status parquet). Before a rerun we drop a stats file that does not parse or whose tar /
parquet is missing, so a shard cut off mid-write is redone rather than trusted.

`local_blob` (for `make-pool --direct`) makes the workers read each URL's bytes from a local blob instead of
the network; everything else (resize, encode, writers, stats) is img2dataset's own code, so the files match.
"""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInputError, SfcompError

# DataComp's settings (download_upstream.py), except image_size which callers may change.
DATACOMP_SETTINGS = dict(
    input_format="parquet",
    url_col="url",
    caption_col="text",
    save_additional_columns=["uid"],
    output_format="webdataset",
    number_sample_per_shard=10000,
    oom_shard_count=8,
    image_size=512,
    resize_mode="keep_ratio_largest",
    encode_format="jpg",
)


@dataclass
class DownloadResult:
    requested: int
    downloaded: int
    shards: int
    shards_skipped: int            # finished before this run (resume)
    failed_to_download: int = 0
    failed_to_resize: int = 0
    status: dict = field(default_factory=dict)

    def summary(self) -> str:
        pct = 100.0 * self.downloaded / self.requested if self.requested else 0.0
        return (f"requested {self.requested}, downloaded {self.downloaded} ({pct:.1f}%), "
                f"failed to download {self.failed_to_download}, failed to resize {self.failed_to_resize}; "
                f"{self.shards} shards ({self.shards_skipped} already done before this run)")


def input_files(url_list: str | os.PathLike) -> list[str]:
    p = Path(url_list)
    files = sorted(str(x) for x in p.glob("*.parquet")) if p.is_dir() else [str(p)]
    if not files or not all(os.path.isfile(f) for f in files):
        raise BadInputError(url_list, "no url parquet file(s) found")
    return files


def count_requested(url_list: str | os.PathLike, samples_per_shard: int = 10000) -> tuple[int, int, bool]:
    """(rows in the url parquet(s), shards img2dataset will make of them, whether they have face_bboxes).

    Checks the url/text/uid columns. img2dataset shards each input file on its own, so a file's last shard
    may be short.
    """
    import pyarrow.parquet as pq

    n, n_shards, has_bbox = 0, 0, True
    for f in input_files(url_list):
        try:
            schema = pq.read_schema(f)
            rows = pq.ParquetFile(f).metadata.num_rows
        except Exception as e:
            raise BadInputError(f, f"unreadable parquet ({type(e).__name__}: {e})") from None
        for col in ("url", "text", "uid"):
            if col not in schema.names:
                raise BadInputError(f, f"url parquet has no column {col!r} (has: {', '.join(schema.names)})")
        has_bbox &= "face_bboxes" in schema.names
        n += rows
        n_shards += -(-rows // samples_per_shard)
    return n, n_shards, has_bbox


# what img2dataset (DATACOMP_SETTINGS: 8-digit shard names) writes in its output folder, a killed run included
IMG2DATASET_FILES = tuple("[0-9]" * 8 + ext for ext in (".tar", ".parquet", "_stats.json")) + ("_tmp", "_tmp/*.feather")


def clean_partial_shards(output_dir: str | os.PathLike) -> list[str]:
    """Remove stats files that img2dataset would trust but whose shard is incomplete; their names."""
    removed = []
    for stats in glob.glob(os.path.join(output_dir, "*_stats.json")):
        stem = stats[: -len("_stats.json")]
        ok = os.path.isfile(stem + ".tar") and os.path.isfile(stem + ".parquet")
        try:
            with open(stats) as f:
                ok &= "successes" in json.load(f)
        except (OSError, json.JSONDecodeError):
            ok = False
        if not ok:
            os.unlink(stats)
            removed.append(stats)
    return removed


def read_stats(output_dir: str | os.PathLike) -> list[dict]:
    out = []
    for stats in sorted(glob.glob(os.path.join(output_dir, "*_stats.json"))):
        with open(stats) as f:
            out.append(json.load(f))
    return out


def download(url_list: str | os.PathLike, output_dir: str | os.PathLike, image_size: int = 512,
             processes: int = 2, threads: int = 32, samples_per_shard: int = 10000, timeout: int = 10,
             retries: int = 0, local_blob: str | os.PathLike | None = None, quiet: bool = False) -> DownloadResult:
    """Download the url parquet(s) `url_list` into webdataset shards in `output_dir` (resumes a partial run).

    `url_list` is one parquet or a folder of them with columns url, text, uid (and face_bboxes, which is then
    passed as img2dataset's bbox_col, as DataComp does). With `local_blob` (a blob file with a sibling
    `<blob>.routes.json` of {url: [offset, length]}), URLs are read from it instead of fetched.
    """
    from .guard import check_outputs, refuse_foreign_folder

    blob = [local_blob, f"{os.fspath(local_blob)}.routes.json"] if local_blob else []
    check_outputs([output_dir], [*input_files(url_list), *blob], what="--out", kind="dir")
    # img2dataset writes NNNNNNNN.* over what is there and removes _tmp/; clean_partial_shards removes *_stats.json
    refuse_foreign_folder(output_dir, markers=(), leftovers=IMG2DATASET_FILES, what="--out", made_by="img2dataset")
    output_dir = os.path.abspath(output_dir)
    requested, n_shards, has_bbox = count_requested(url_list, samples_per_shard)
    os.makedirs(output_dir, exist_ok=True)
    clean_partial_shards(output_dir)
    done_before = len(glob.glob(os.path.join(output_dir, "*_stats.json")))
    if done_before < n_shards:
        _run_img2dataset(url_list, output_dir, image_size, processes, threads, samples_per_shard, timeout,
                         retries, has_bbox, local_blob, quiet)
    stats = read_stats(output_dir)
    status: dict[str, int] = {}
    for s in stats:
        for k, v in s.get("status_dict", {}).items():
            status[k] = status.get(k, 0) + v
    return DownloadResult(
        requested=requested,
        downloaded=sum(s["successes"] for s in stats),
        shards=len(stats),
        shards_skipped=done_before,
        failed_to_download=sum(s["failed_to_download"] for s in stats),
        failed_to_resize=sum(s["failed_to_resize"] for s in stats),
        status=status,
    )


def _run_img2dataset(url_list, output_dir, image_size, processes, threads, samples_per_shard, timeout, retries,
                     has_bbox, local_blob, quiet) -> None:
    files = input_files(url_list)
    spec = dict(DATACOMP_SETTINGS)
    spec.update(
        url_list=files[0] if len(files) == 1 else str(Path(url_list).resolve()),
        output_folder=output_dir, image_size=int(image_size), processes_count=int(processes),
        thread_count=int(threads), number_sample_per_shard=int(samples_per_shard), timeout=int(timeout),
        retries=int(retries), incremental_mode="incremental", enable_wandb=False,
    )
    if has_bbox:
        spec["bbox_col"] = "face_bboxes"
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", PYTHONUNBUFFERED="1")
    if local_blob is not None:
        env["SFCOMP_LOCAL_BLOB"] = os.path.abspath(local_blob)
    # the spec lives outside output_dir: img2dataset reads every *.json there as a finished shard's stats
    fd, spec_path = tempfile.mkstemp(prefix="sfcomp-download-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(spec, f)
    cmd = [sys.executable, "-m", "sfcomp.download", spec_path]
    try:
        r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL if quiet else None,
                           stderr=subprocess.PIPE, text=True)
    finally:
        os.unlink(spec_path)
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["no error output"])[-1]
        raise SfcompError(f"{output_dir}: img2dataset failed (exit {r.returncode}: {last}); rerun to resume")


# ---- child process ---------------------------------------------------------------------------------------
def _child(spec_path: str) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    with open(spec_path) as f:
        spec = json.load(f)
    import importlib

    M = importlib.import_module("img2dataset.main")  # `img2dataset.main` the attribute is a function

    if os.environ.get("SFCOMP_LOCAL_BLOB"):
        from .sources.blob_fetch import LocalBlobDownloader

        M.Downloader = LocalBlobDownloader
    url_list = spec.pop("url_list")
    M.download(url_list, **spec)


if __name__ == "__main__":
    _child(sys.argv[1])

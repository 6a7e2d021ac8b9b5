"""`--source folder`: a user's own images and captions as a pool source (`make-pool --images DIR --captions FILE`).

The captions table is a CSV or parquet file with the columns
  file      the image's path, relative to --images (an absolute path is used as it is)
  caption   the image's text (its alt-text: the pool's `text`)
  label     optional: a class per row, names (strings) or integers; class names come from these values
  clean     optional: whether the row's caption is known to be right (true/false, 1/0, yes/no)
Rows with a `url` instead of a file are refused in one line: make-pool computes the reference CLIP scores from
each image's pixels before anything is downloaded, so it needs the image itself.

Each usable row is one item, served as its own file (JPEG, PNG and WebP bytes as they are; other formats
re-encoded as PNG, which img2dataset decodes). A row is skipped and counted (make_pool.json `bad_rows`) when its
caption is empty (`empty_caption`), its file is missing (`missing_file`), PIL cannot decode the file
(`unreadable_image`), or, in a table with a label column, its label is empty (`missing_label`); the first that
applies is counted, once per row. The usable rows are split once, by a fixed seed independent of make-pool's:
10% (at least 1, at most 5000) are the eval split (`eval/folder`: zero-shot over the labels, when there are
labels; `eval/folder_retrieval`: their own captions), the rest the pool split, of which make-pool holds 10% (at
least 1, at most 5000) out for the reference CLIPs.
"""
from __future__ import annotations

import io
import math
import re
from pathlib import Path

import numpy as np

from ..errors import BadInputError
from .base import OwnFile, ScannedSource

BAD_ROW_KINDS = ("missing_file", "unreadable_image", "empty_caption", "missing_label")
SERVED_AS_IS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}
MAX_PIXELS_SIDE = 512  # pixels kept for the reference CLIPs and the eval sets: DataComp's download size
MIN_USABLE_ROWS = 10
EVAL_FRAC, REF_FRAC, SPLIT_MAX = 0.1, 0.1, 5000
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}
_INT = re.compile(r"^[+-]?\d+$")


def decode(data: bytes) -> tuple[np.ndarray, OwnFile]:
    """A file's bytes -> (pixels, the file as served). Pixels are (H,W) uint8 for grayscale files and (H,W,3)
    for the rest, transparency composited on white (as img2dataset's resizer does), shrunk to at most
    MAX_PIXELS_SIDE on the long side. JPEG, PNG and WebP are served as they are, other formats as PNG.
    Raises (some PIL or OS error) on an undecodable file."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        fmt, (w, h) = im.format, im.size
        if im.mode.startswith("I"):  # 16/32-bit grayscale
            a = np.asarray(im).astype(np.float64)
            px = Image.fromarray(np.clip(a / 257 if a.max() > 255 else a, 0, 255).astype(np.uint8), "L")
        elif im.mode in ("L", "1"):
            px = im.convert("L")
        elif im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            px = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
        else:
            px = im.convert("RGB")
    if fmt in SERVED_AS_IS:
        served = OwnFile(data, SERVED_AS_IS[fmt], int(w), int(h))
    else:  # GIF, BMP, TIFF, ...: lossless PNG of the decoded pixels, which every downloader reads
        buf = io.BytesIO()
        px.save(buf, format="PNG")
        served = OwnFile(buf.getvalue(), "png", int(w), int(h))
    if max(w, h) > MAX_PIXELS_SIDE:
        s = MAX_PIXELS_SIDE / max(w, h)
        px = px.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    return np.asarray(px, np.uint8), served


def _read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            t = pd.read_parquet(path)
        else:
            t = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise BadInputError(path, "no such captions file") from None
    except Exception as e:
        raise BadInputError(path, f"unreadable captions table ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
    t.columns = [str(c).strip().lower() for c in t.columns]
    return t


def _text(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():  # parquet ints with gaps read as floats
        return str(int(v))
    return str(v).strip()


class FolderSource(ScannedSource):
    """A folder of images and a captions table. Registered unconfigured (`--source folder`); the CLI makes the
    configured one from --images and --captions."""
    name = "folder"
    default_noise = 0.0
    default_size = None
    simulate_web = False
    needs_files = True

    def __init__(self, images: str | Path | None = None, captions: str | Path | None = None):
        self.images_dir = None if images is None else Path(images)
        self.captions_path = None if captions is None else Path(captions)
        self._scanned: dict | None = None
        self._table = None

    def with_files(self, images: str | Path, captions: str | Path) -> FolderSource:
        return type(self)(images, captions)

    def describe(self) -> dict:
        if self.images_dir is None:
            return {}
        return {"images": str(self.images_dir.resolve()), "captions": str(self.captions_path.resolve())}

    # ---- the table, checked before anything is written ------------------------------------------------------
    def check(self) -> None:
        """Refuse a bad --images / --captions (one BadInputError) before make-pool creates anything."""
        if self.images_dir is None or self.captions_path is None:
            raise BadInputError(None, "--source folder needs --images DIR and --captions FILE")
        if not self.images_dir.is_dir():
            raise BadInputError(self.images_dir, "--images is not a folder")
        self.table()
        self._scan()

    def table(self):
        if self._table is not None:
            return self._table
        path = self.captions_path
        if path is None:
            raise BadInputError(None, "--source folder needs --images DIR and --captions FILE")
        if path.is_dir():
            raise BadInputError(path, "--captions is a folder; a CSV or parquet file is wanted")
        t = _read_table(path)
        cols = set(t.columns)
        if "caption" not in cols:
            raise BadInputError(path, f"no `caption` column (columns: {', '.join(t.columns) or 'none'})")
        if "url" in cols and any(_text(u) for u in t["url"]):
            raise BadInputError(path, "rows with a `url` are not supported: make-pool needs each image's pixels "
                                      "for the reference CLIP scores; give local files in a `file` column")
        if "file" not in cols:
            raise BadInputError(path, f"no `file` column (columns: {', '.join(t.columns)})")
        if "clean" in cols:
            bad = [v for v in t["clean"] if not isinstance(v, (bool, np.bool_))
                   and _text(v).lower() not in _TRUE | _FALSE]
            if bad:
                raise BadInputError(path, f"`clean` must be true/false (or 1/0, yes/no), got {bad[0]!r}")
        self._table = t
        return t

    def _labels(self, values: list[str]) -> tuple[np.ndarray, list[str]]:
        """Class indices and class names: integers as they are (names "0".."K-1"), else the sorted names."""
        if all(_INT.match(v) for v in values):
            ints = np.array([int(v) for v in values], np.int64)
            if len(ints) and ints.min() < 0:
                raise BadInputError(self.captions_path, f"integer labels must be >= 0, got {int(ints.min())}")
            k = int(ints.max()) + 1 if len(ints) else 0
            return ints, [str(c) for c in range(k)]
        names = sorted(set(values))
        index = {c: i for i, c in enumerate(names)}
        return np.array([index[v] for v in values], np.int64), names

    def _scan(self) -> dict:
        """Read every row once: the usable items, the bad-row counts and the fixed eval / pool split."""
        if self._scanned is not None:
            return self._scanned
        t = self.table()
        has_label, has_clean = "label" in t.columns, "clean" in t.columns
        bad = dict.fromkeys(BAD_ROW_KINDS, 0)
        rows, pixels, files, texts, labels, clean = [], [], [], [], [], []
        for r in range(len(t)):
            caption = _text(t["caption"].iat[r])
            label = _text(t["label"].iat[r]) if has_label else ""
            if not caption:
                bad["empty_caption"] += 1
                continue
            name = _text(t["file"].iat[r])
            path = self.images_dir / name if name else None
            if path is None or not path.is_file():
                bad["missing_file"] += 1
                continue
            if has_label and not label:
                bad["missing_label"] += 1
                continue
            try:
                data = path.read_bytes()
                px, own = decode(data)
            except Exception:  # PIL raises many types for a broken file; the row is skipped and counted
                bad["unreadable_image"] += 1
                continue
            rows.append(r)
            pixels.append(px)
            files.append(own)
            texts.append(caption)
            labels.append(label)
            if has_clean:
                v = t["clean"].iat[r]
                clean.append(bool(v) if isinstance(v, (bool, np.bool_)) else _text(v).lower() in _TRUE)
        n = len(rows)
        if n < MIN_USABLE_ROWS:
            skipped = ", ".join(f"{k} {v}" for k, v in bad.items() if v) or "none skipped"
            raise BadInputError(self.captions_path, f"{n} usable rows of {len(t)} ({skipped}); make-pool needs "
                                                    f"at least {MIN_USABLE_ROWS}")
        label_idx, classnames = self._labels(labels) if has_label else (None, None)
        n_eval = min(SPLIT_MAX, max(1, round(EVAL_FRAC * n)))
        order = np.random.default_rng(0).permutation(n)
        split = {"test": np.sort(order[:n_eval]), "train": np.sort(order[n_eval:])}
        self._scanned = dict(rows=np.array(rows, np.int64), pixels=pixels, served=files, texts=texts,
                             labels=label_idx, classnames=classnames, split=split, bad=bad, n_table=len(t),
                             clean=np.array(clean, bool) if has_clean else None,
                             reference_size=min(SPLIT_MAX, max(1, round(REF_FRAC * len(split["train"])))))
        return self._scanned

    # ---- the Source protocol ------------------------------------------------------------------------------
    @property
    def classnames(self) -> list[str] | None:  # type: ignore[override]
        return None if self.captions_path is None else self._scan()["classnames"]

    def item_rows(self, split: str) -> dict[str, list]:
        """Each item's row in the captions table (0-based, header not counted) and its `file` value."""
        s = self._scan()
        rows = s["rows"][s["split"][split]]
        return {"row": [int(r) for r in rows], "file": [_text(self.table()["file"].iat[int(r)]) for r in rows]}

    def report(self) -> dict:
        s = self._scan()
        return {"bad_rows": dict(s["bad"]),
                "rows": {"table": s["n_table"], "usable": len(s["rows"]), "eval": len(s["split"]["test"]),
                         "pool_split": len(s["split"]["train"]), "reference": self.reference_size},
                "labels": s["labels"] is not None, "clean_column": s["clean"] is not None}

    def input_paths(self) -> list[Path]:
        paths = [p for p in (self.images_dir, self.captions_path) if p is not None]
        if self._table is not None and self.images_dir is not None:
            # images the table names outside --images (absolute, `../`, or through a link): their folders too
            root = self.images_dir.resolve()
            outside = set()
            for f in self._table["file"]:
                if not (name := _text(f)):
                    continue
                real = (self.images_dir / name).resolve()
                if not real.is_relative_to(root):
                    outside.add(real.parent)
            paths += sorted(outside)
        return paths

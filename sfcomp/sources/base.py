"""What `make-pool` needs from a dataset: the `Source` protocol (torch-free).

A source names its splits and loads each one as `Items`: images (uint8, any height x width, grayscale or RGB,
or encoded bytes that are decoded here), a class label per item or none, and a human-written text per item or
none. Optional class names drive generated captions and zero-shot prompts. Everything downstream (the plan, the
noise, the reference CLIPs, the eval sets) reads only this, so a new source is one module defining a `Source`
subclass plus one `register(...)` line in sfcomp/sources/__init__.py.

Roles of the splits: `pool_split` feeds the pool and, held out of it first, the reference CLIPs'
`reference_size` items (never a pool sample); `eval_split` gives the eval sets and never enters the pool.
"""
from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import SfcompError
from .captions import CaptionVocab

# Zero-shot prompt templates of a source that states none ({c} = class name).
ZEROSHOT_TEMPLATES = (
    "a photo of a {c}.",
    "a photo of the {c}.",
    "a close-up photo of a {c}.",
    "a low resolution photo of a {c}.",
    "a picture of a {c}.",
)
# Largest side of a served ("original") image and how often each appears, for a source that states none:
# spread like web images, from thumbnails to large photos.
SERVED_SIDES = (64, 96, 128, 160, 224, 256, 320, 400, 512)
SERVED_SIDE_P = (0.06, 0.10, 0.10, 0.14, 0.16, 0.18, 0.12, 0.08, 0.06)


@dataclass(frozen=True)
class OwnFile:
    """An item's own image file, served as it is: its bytes, extension (jpg, png or webp) and size in pixels."""
    data: bytes
    ext: str
    width: int
    height: int


@dataclass
class Items:
    """One split of a source. `images` is an (N,H,W) or (N,H,W,3) uint8 array when all items share a shape,
    else a 1-D object array of (H,W) / (H,W,3) uint8 arrays; `labels` (N,) int64 or None; `texts` N str or None.
    `files` (optional): each item's own file (OwnFile), served instead of a web-sized re-encoding of its pixels;
    `clean` (optional): (N,) bool, whether the source knows the item's text to be right (truth.parquet's clean)."""
    images: np.ndarray
    labels: np.ndarray | None = None
    texts: list[str] | None = None
    files: list[OwnFile] | None = None
    clean: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.images = as_images(self.images)
        n = len(self.images)
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if self.labels.shape != (n,) or not np.issubdtype(self.labels.dtype, np.integer):
                raise SfcompError(f"a source gave {n} images but labels of shape {self.labels.shape} "
                                  f"({self.labels.dtype}); labels must be one integer per image")
        if self.texts is not None:
            self.texts = [str(t) for t in self.texts]
            if len(self.texts) != n:
                raise SfcompError(f"a source gave {n} images but {len(self.texts)} texts")
        if self.labels is None and self.texts is None:
            raise SfcompError("a source must give a label or a text for each image (it gave neither)")
        if self.files is not None and len(self.files) != n:
            raise SfcompError(f"a source gave {n} images but {len(self.files)} files")
        if self.clean is not None:
            self.clean = np.asarray(self.clean, bool)
            if self.clean.shape != (n,):
                raise SfcompError(f"a source gave {n} images but clean flags of shape {self.clean.shape}")

    def __len__(self) -> int:
        return len(self.images)


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image bytes -> (H,W) uint8 for grayscale files, (H,W,3) uint8 for everything else."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im = im.convert("L") if im.mode in ("L", "1", "I;16", "I") else im.convert("RGB")
        return np.asarray(im, np.uint8)


def _one_image(x) -> np.ndarray:
    if isinstance(x, (bytes, bytearray, memoryview)):
        x = decode_image(bytes(x))
    x = np.asarray(x)
    if x.ndim == 3 and x.shape[2] == 1:
        x = x[:, :, 0]
    if x.dtype != np.uint8 or x.ndim not in (2, 3) or (x.ndim == 3 and x.shape[2] != 3):
        raise SfcompError(f"a source gave an image of shape {x.shape} ({x.dtype}); images must be uint8, "
                          f"(H,W) grayscale or (H,W,3) RGB, or encoded bytes")
    return x


def as_images(images) -> np.ndarray:
    """Normalise a source's images: a uniform uint8 array as it is ((N,H,W,1) -> (N,H,W)), anything else item by
    item (decoding bytes) into one stacked array when the shapes agree, or a 1-D object array when they do not."""
    if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim in (3, 4):
        if images.ndim == 4 and images.shape[3] == 1:
            return images[..., 0]
        if images.ndim == 3 or images.shape[3] == 3:
            return images
    items = [_one_image(x) for x in images]
    if items and all(x.shape == items[0].shape for x in items):
        return np.stack(items)
    out = np.empty(len(items), object)
    for i, x in enumerate(items):
        out[i] = x
    return out


def fit_size(w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """The largest (w', h') of a w x h item's aspect that fits a width x height canvas (integer arithmetic, so a
    square item gets exactly min(width, height))."""
    if width * h <= height * w:
        return width, max(1, (2 * h * width + w) // (2 * w))
    return max(1, (2 * w * height + h) // (2 * h)), height


def save_images(path: str | Path, images: np.ndarray) -> None:
    """Write images to an .npz without pickles (ragged ones as one flat buffer plus their shapes)."""
    from ..atomic import atomic_open

    if images.dtype != object:
        arrays = {"stacked": images}
    else:
        arrays = {"flat": np.concatenate([x.reshape(-1) for x in images]) if len(images) else np.zeros(0, np.uint8),
                  "shapes": np.array([x.shape + (1,) * (3 - x.ndim) for x in images], np.int64).reshape(-1, 3),
                  "ndims": np.array([x.ndim for x in images], np.int64)}
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def load_images(path: str | Path) -> np.ndarray:
    with np.load(path) as z:
        if "stacked" in z.files:
            return z["stacked"]
        flat, shapes, ndims = z["flat"], z["shapes"], z["ndims"]
    out = np.empty(len(shapes), object)
    start = 0
    for i, (shape, nd) in enumerate(zip(shapes, ndims)):
        size = int(np.prod(shape))
        out[i] = flat[start : start + size].reshape(tuple(int(s) for s in shape[:nd]))
        start += size
    return out


class Source:
    """A pool source. Subclass it, set the class attributes that differ from these defaults, implement `load`.

    name                  the `make-pool --source` name (eval sets go to POOL/eval/<name with _ for ->)
    classnames            one plain name per label, for zero-shot prompts ("a photo of a {c}."); None: no labels
    pool_split, eval_split  the split names `load` accepts for the pool (and reference) items and the eval items
    reference_size        items of the pool split held out for the reference CLIPs (make-pool's default)
    reference_image_size  side the reference CLIPs see (items fitted and black-padded); None: the preset's
    zeroshot_templates    prompt templates for the classification eval set
    served_sides, served_side_p  the served files' largest side and its probability
    default_noise         make-pool's --noise when none is given (a user's own data: 0, no injected noise)
    default_size          make-pool's --size when none is given; None: every pool-split item not held out
                          for the reference CLIPs (and --size may only lower it)
    simulate_web          True: the plan adds the web's defects (3% dead links, 1% corrupt files, exact
                          duplicates at the noise mix's rate); False: none, and duplicates only with --noise > 0
    needs_files           True: the source is configured from make-pool's --images and --captions (with_files)
    """
    name: str = ""
    classnames: Sequence[str] | None = None
    pool_split: str = "train"
    eval_split: str = "test"
    reference_size: int = 5000
    reference_image_size: int | None = None
    zeroshot_templates: Sequence[str] = ZEROSHOT_TEMPLATES
    served_sides: Sequence[int] = SERVED_SIDES
    served_side_p: Sequence[float] = SERVED_SIDE_P
    default_noise: float = 0.5
    default_size: int | None = 60000
    simulate_web: bool = True
    needs_files: bool = False

    def with_files(self, images: str | Path, captions: str | Path) -> Source:
        """This source reading `images` and `captions` (make-pool's --images, --captions); needs_files sources."""
        raise NotImplementedError

    def check(self) -> None:
        """Raise BadInputError for input the source cannot use, before make-pool creates anything."""

    def describe(self) -> dict:
        """What identifies this source's input beyond its name (recorded in make_pool.json's args)."""
        return {}

    def report(self) -> dict:
        """Counts for make_pool.json (e.g. rows skipped), merged into its summary."""
        return {}

    def item_rows(self, split: str) -> dict[str, list] | None:
        """Columns naming each item of `split` in the source's own terms (e.g. its table row and file); make-pool
        writes them beside each pool uid to POOL/source_rows.parquet. None: no such file."""
        return None

    def load(self, split: str) -> Items:
        """The items of `split` (one of `pool_split`, `eval_split`), in a fixed order."""
        raise NotImplementedError

    def caption_vocab(self) -> CaptionVocab | None:
        """Words for generated captions of labelled items; None when every item brings its own text."""
        return CaptionVocab.plain(self.classnames) if self.classnames is not None else None

    def input_paths(self) -> list[Path]:
        """Files or folders the source reads, so make-pool refuses an --out that would overwrite them."""
        return []

    def eval_name(self) -> str:
        return self.name.replace("-", "_")


def apt_install(package: str, no_recommends: bool = False) -> tuple[bool, str]:
    """Install a Debian data package when sfcomp runs as root and apt-get exists (refreshing the package lists
    once if the first try fails). Returns (installed, why not): (False, "") when it could not try (not root, no
    apt-get), (False, apt-get's last line) when apt-get failed. Callers check for their files afterwards."""
    import os
    import shutil
    import subprocess

    if not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")):
        return False, ""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq", *(["--no-install-recommends"] if no_recommends else []), package]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:  # the package lists may be stale or absent
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode == 0:
        return True, ""
    return False, ((r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"])[0]


class ScannedSource(Source):
    """A source read once into a scan dict (`_scan()`): `split` ({"train", "test"} -> sorted item indices),
    `pixels`, `texts`, `served` (each item's OwnFile), `labels` ((N,) int64 or None), `clean` ((N,) bool or None)
    and `reference_size`. `load` and `reference_size` read it; subclasses implement `_scan`."""

    def _scan(self) -> dict:
        raise NotImplementedError

    @property
    def reference_size(self) -> int:  # type: ignore[override]
        return self._scan()["reference_size"]

    def load(self, split: str) -> Items:
        s = self._scan()
        if split not in s["split"]:
            raise ValueError(f"split must be 'train' or 'test', not {split!r}")
        idx = s["split"][split]
        return Items(images=[s["pixels"][i] for i in idx],
                     labels=None if s["labels"] is None else s["labels"][idx],
                     texts=[s["texts"][i] for i in idx], files=[s["served"][i] for i in idx],
                     clean=None if s["clean"] is None else s["clean"][idx])

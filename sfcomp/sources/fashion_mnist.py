"""Fashion-MNIST (Zalando, MIT licence) from the Debian package `dataset-fashion-mnist`.

The package puts the four idx files at /usr/share/datasets/fashion-mnist/*.gz. Where they are missing, sfcomp
installs the package with apt when it runs as root, and otherwise fails with a one-line message saying how.
`SFCOMP_FASHION_MNIST_DIR` points elsewhere (a folder holding the same four files).
"""
from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..errors import SfcompError

DEBIAN_PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# The dataset's own class names, then the everyday names captions use.
CLASSNAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
              "Ankle boot"]
# Plain lower-case names for zero-shot prompts ("a photo of a {c}").
PROMPT_CLASSNAMES = ["t-shirt", "trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                     "ankle boot"]


def data_dir() -> Path:
    return Path(os.environ.get("SFCOMP_FASHION_MNIST_DIR", DEFAULT_DIR))


def _missing(folder: Path) -> list[Path]:
    return [folder / name for pair in FILES.values() for name in pair if not (folder / name).is_file()]


def ensure_installed(install: bool = True) -> Path:
    """The folder holding the idx files; installs the Debian package when missing and running as root."""
    folder = data_dir()
    if not _missing(folder):
        return folder
    how = f"install it with `sudo apt-get install {DEBIAN_PACKAGE}` (Debian/Ubuntu) or set " \
          f"SFCOMP_FASHION_MNIST_DIR to a folder holding {', '.join(FILES['train'] + FILES['test'])}"
    if folder != DEFAULT_DIR:
        raise SfcompError(f"{folder}: Fashion-MNIST files missing ({_missing(folder)[0].name}); {how}")
    can_apt = install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get")
    if can_apt:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        cmd = ["apt-get", "install", "-y", "-qq", DEBIAN_PACKAGE]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode != 0:  # the package lists may be stale or absent
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, text=True)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if r.returncode == 0 and not _missing(folder):
            return folder
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        raise SfcompError(f"{folder}: Fashion-MNIST missing and `apt-get install {DEBIAN_PACKAGE}` failed "
                          f"({tail[0]}); {how}")
    raise SfcompError(f"{folder}: Fashion-MNIST missing (Debian package {DEBIAN_PACKAGE} not installed); {how}")


def _read_idx(path: Path, offset: int) -> np.ndarray:
    try:
        with gzip.open(path) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)
    except (OSError, EOFError) as e:
        raise SfcompError(f"{path}: unreadable Fashion-MNIST file ({e})") from None


def load(split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """`(images (N,28,28) uint8, labels (N,) uint8)` of split "train" (60,000) or "test" (10,000)."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    folder = ensure_installed()
    img_name, lab_name = FILES[split]
    images = _read_idx(folder / img_name, 16).reshape(-1, 28, 28)
    labels = _read_idx(folder / lab_name, 8)
    if len(images) != len(labels):
        raise SfcompError(f"{folder / img_name}: {len(images)} images but {len(labels)} labels")
    return images, labels

"""`--source tuxpaint`: Tux Paint's rubber stamps (Debian package `tuxpaint-stamps-default`, GPL-2+) as a real RGB
pool with human-written captions.

The package puts ~1,030 stamps under /usr/share/tuxpaint/stamps/CATEGORY/[SUBFOLDER/...]/NAME.{png,svg}, each
beside NAME.txt (its description) and optional NAME.dat (Tux Paint options: colorable, tintable, noflip, scale)
and sound files. `SFCOMP_TUXPAINT_DIR` points elsewhere (a folder in the same layout). Where the package is
missing, sfcomp installs it with apt when it runs as root, and otherwise fails in one line saying how.

Items: every NAME.png (not Tux Paint's NAME_mirror.png / NAME_flip.png alternates), its RGBA pixels put on white
(as img2dataset's resizer does; folder.decode), served as the stamp's own PNG at its native size (19 to 2,348 px,
median 150), which the pool's download resizes as DataComp's does. Caption: the English description from
NAME.txt (see `parse_description`). Label: the top-level folder (16 categories: animals, symbols, town, ...), a
zero-shot class when at least 2 usable stamps share it. Every item is clean=True: nobody injected noise, and
`--noise` (default 0, as for `--source folder`) adds some only when asked. Skipped and counted in make_pool.json
`bad_rows`: a stamp without NAME.txt (`no_description`), one whose description has no English text
(`empty_description`), an SVG-only stamp (`svg_only`: 165 in the package; rendering SVG would need librsvg), an
undecodable PNG (`unreadable_image`), a stamp outside any category folder (`no_category`) or alone in its
category (`lone_category`). The usable stamps (785 in the 2022.06.04 package) are split once by a fixed seed:
10% the eval split (`eval/tuxpaint`: zero-shot over the categories; `eval/tuxpaint_retrieval`: their own
descriptions), the rest the pool split, of which make-pool holds 10% out for the reference CLIPs.

The noise nobody injected (docs/DEMO_POOL.md "Tux Paint stamps", from 20 stamps looked at and counts over all
785): descriptions are written for children using the stamp tool, not to describe the picture. Most are generic
(median 3 words; 216 stamps share their caption with another, e.g. six different flowers are all "A flower.",
filled and outlined letters share "The letter z."); some do not describe what is shown ("Eat your broccoli!",
a dreidel's "Shin stands for shtel arayn or put in. ...", a football helmet's "– Because a brain is a terrible
thing to waste…"). Categories overlap and are coarse (a black hand silhouette is `symbols`, a spider playing
soccer `animals`; `symbols`, 31% of the stamps, is mostly letters, digits and sign-language hands). 12 of the 20
looked at are drawings, glyphs or cartoons rather than photos, and `colorable` / `tintable` stamps (up to 266)
are grey or white shapes Tux Paint tints, so their pixels lack the colour a picture of the thing would have.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import BadInputError, SfcompError
from .base import ScannedSource, apt_install

DEBIAN_PACKAGE = "tuxpaint-stamps-default"
DEFAULT_DIR = Path("/usr/share/tuxpaint/stamps")
ENV_DIR = "SFCOMP_TUXPAINT_DIR"
ALTERNATES = ("_mirror", "_flip")  # Tux Paint's pre-drawn mirrored / flipped images of a stamp, not stamps
# A translation line: LANG[_REGION][@VARIANT].utf8=TEXT (e.g. fr.utf8=, pt_BR.utf8=, ca@valencia.utf8=).
TRANSLATION = re.compile(r"^([A-Za-z]{2,3}(?:_[A-Za-z]{2,3})?(?:@[A-Za-z]+)?)\.utf8=(.*)$")
# English translation lines, used only when a file has no untranslated line.
ENGLISH = ("en_US", "en", "en_GB", "en_CA", "en_AU", "en_NZ", "en_ZA")
_TAG = re.compile(r"<[^<>]*>")
BAD_ROW_KINDS = ("no_description", "empty_description", "svg_only", "unreadable_image", "no_category",
                 "lone_category")
MIN_CATEGORY = 2
MIN_USABLE = 10
EVAL_FRAC, REF_FRAC, SPLIT_MAX = 0.1, 0.1, 5000
# The package's folders as plain topics for zero-shot prompts; other folders use their name.
TOPICS = {"animals": "animals", "clothes": "clothes", "food": "food", "hobbies": "hobbies",
          "household": "household objects", "medical": "medical things", "military": "military things",
          "naturalforces": "natural forces", "people": "people", "plants": "plants",
          "seasonal": "seasonal things", "space": "space", "sports": "sports", "symbols": "symbols",
          "town": "town", "vehicles": "vehicles"}
ZEROSHOT_TEMPLATES = (
    "a picture of {c}.",
    "a drawing of {c}.",
    "a photo of {c}.",
    "clip art of {c}.",
    "a cut-out picture of {c}.",
    "a children's stamp of {c}.",
)


def data_dir() -> Path:
    return Path(os.environ.get(ENV_DIR, DEFAULT_DIR))


def parse_description(text: str) -> str:
    """The English description in a stamp's NAME.txt, or "" when it has none.

    Format (Tux Paint's): one untranslated line, the US English description (the package's is always the first
    line), and translation lines `LANG.utf8=TEXT`. The English text is the first non-blank line that is not a
    translation; without one, the first English translation (en_US, en, en_GB, en_CA, en_AU, ...). Markup
    (<...> tags), a byte-order mark and repeated whitespace are stripped."""
    english, translations = "", {}
    for line in text.lstrip("\ufeff").splitlines():
        line = line.strip()
        m = TRANSLATION.match(line)
        if m:
            translations.setdefault(m.group(1), m.group(2))
        elif line and not english:
            english = line
    if not english:
        english = next((translations[k] for k in ENGLISH if k in translations), "")
    return " ".join(_TAG.sub(" ", english).split())


def topic(category: str) -> str:
    return TOPICS.get(category, category.replace("_", " ").replace("-", " "))


# ---- the package: found, or installed with apt when root -----------------------------------------------------
def _has_stamps(folder: Path) -> bool:
    return folder.is_dir() and next(folder.rglob("*.txt"), None) is not None


def ensure_installed(install: bool = True) -> Path:
    """The stamps folder; installs the Debian package when it is missing and sfcomp runs as root."""
    folder = data_dir()
    if _has_stamps(folder):
        return folder
    how = f"install it with `sudo apt-get install --no-install-recommends {DEBIAN_PACKAGE}` (Debian/Ubuntu) " \
          f"or set {ENV_DIR} to a folder of Tux Paint stamps (CATEGORY/.../NAME.png + NAME.txt)"
    if folder != DEFAULT_DIR:
        raise BadInputError(folder, f"no Tux Paint stamps here ({ENV_DIR}); {how}")
    if install:
        installed, why = apt_install(DEBIAN_PACKAGE, no_recommends=True)
        if installed and _has_stamps(folder):
            return folder
        if installed or why:
            raise SfcompError(f"{folder}: Tux Paint stamps missing and `apt-get install {DEBIAN_PACKAGE}` failed "
                              f"({why or 'no stamps after it'}); {how}")
    raise SfcompError(f"{folder}: Tux Paint stamps missing (Debian package {DEBIAN_PACKAGE} not installed); {how}")


# ---- reading the folder -----------------------------------------------------------------------------------
def scan(folder: Path) -> dict:
    """Every stamp of `folder` read once: usable items (pixels, own file, caption, category), the skip counts
    and the fixed eval / pool split."""
    from .folder import decode

    bad = dict.fromkeys(BAD_ROW_KINDS, 0)
    found = []  # (relative png path, category, caption, pixels, own file)
    for svg in sorted(folder.rglob("*.svg")):
        if not svg.with_suffix(".png").exists() and svg.with_suffix(".txt").exists():
            bad["svg_only"] += 1
    for png in sorted(folder.rglob("*.png")):
        if png.stem.endswith(ALTERNATES) and png.with_name(png.stem.rsplit("_", 1)[0] + ".png").exists():
            continue
        rel = png.relative_to(folder)
        txt = png.with_suffix(".txt")
        if not txt.is_file():
            bad["no_description"] += 1
            continue
        caption = parse_description(txt.read_text(encoding="utf-8", errors="replace"))
        if not caption:
            bad["empty_description"] += 1
            continue
        if len(rel.parts) < 2:
            bad["no_category"] += 1
            continue
        try:
            px, own = decode(png.read_bytes())
        except Exception:  # PIL raises many types for a broken file; the stamp is skipped and counted
            bad["unreadable_image"] += 1
            continue
        found.append((str(rel), rel.parts[0], caption, px, own))
    counts: dict[str, int] = {}
    for f in found:
        counts[f[1]] = counts.get(f[1], 0) + 1
    keep = [f for f in found if counts[f[1]] >= MIN_CATEGORY]
    bad["lone_category"] = len(found) - len(keep)
    n = len(keep)
    if n < MIN_USABLE:
        skipped = ", ".join(f"{k} {v}" for k, v in bad.items() if v) or "none skipped"
        raise BadInputError(folder, f"{n} usable Tux Paint stamps ({skipped}); make-pool needs at least "
                                    f"{MIN_USABLE}")
    categories = sorted({f[1] for f in keep})
    index = {c: i for i, c in enumerate(categories)}
    n_eval = min(SPLIT_MAX, max(1, round(EVAL_FRAC * n)))
    order = np.random.default_rng(0).permutation(n)
    split = {"test": np.sort(order[:n_eval]), "train": np.sort(order[n_eval:])}
    return dict(files=[f[0] for f in keep], categories=categories, labels=np.array([index[f[1]] for f in keep],
                np.int64), texts=[f[2] for f in keep], pixels=[f[3] for f in keep], served=[f[4] for f in keep],
                clean=np.ones(len(keep), bool),
                split=split, bad=bad, found=len(found) + sum(v for k, v in bad.items() if k != "lone_category"),
                reference_size=min(SPLIT_MAX, max(1, round(REF_FRAC * len(split["train"])))))


class TuxPaintSource(ScannedSource):
    name = "tuxpaint"
    pool_split, eval_split = "train", "test"
    zeroshot_templates = ZEROSHOT_TEMPLATES
    default_noise = 0.0  # real human captions: their own noise only, injected noise only when asked
    default_size = None
    simulate_web = False

    def __init__(self) -> None:
        self._scans: dict[str, dict] = {}  # by folder: SFCOMP_TUXPAINT_DIR may change between builds

    def _scan(self) -> dict:
        folder = ensure_installed()
        key = str(folder.resolve())
        if key not in self._scans:
            self._scans[key] = scan(folder)
        return self._scans[key]

    def check(self) -> None:
        self._scan()

    def describe(self) -> dict:
        return {"stamps": str(data_dir().resolve())}

    @property
    def classnames(self) -> list[str]:  # type: ignore[override]
        return [topic(c) for c in self._scan()["categories"]]

    def item_rows(self, split: str) -> dict[str, list]:
        """Each item's PNG (relative to the stamps folder) and its category folder."""
        s = self._scan()
        idx = s["split"][split]
        return {"file": [s["files"][i] for i in idx], "category": [s["categories"][s["labels"][i]] for i in idx]}

    def report(self) -> dict:
        s = self._scan()
        return {"bad_rows": dict(s["bad"]),
                "rows": {"stamps": s["found"], "usable": len(s["texts"]), "eval": len(s["split"]["test"]),
                         "pool_split": len(s["split"]["train"]), "reference": self.reference_size},
                "categories": list(s["categories"])}

    def input_paths(self) -> list[Path]:
        return [data_dir()]

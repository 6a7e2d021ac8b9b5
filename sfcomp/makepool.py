"""`sfcomp make-pool`: a pool from a pool source (sfcomp/sources: a noisy demo, or a user's own folder), in
DataComp's exact on-disk layout.

Stages (each resumable; a finished stage leaves a file that the next run trusts):
  1. plan      images -> captions, noise, uids, served files (DIR/_work/plan.parquet, blob, pixels)
  2. metadata  reference CLIP models (trained on a held-out clean split) -> scores + embeddings;
               DIR/metadata/<32-hex>.parquet + .npz (the npz first, the parquet last)
  3. shards    serve the files on 127.0.0.1 and fetch them with `sfcomp download` (img2dataset), or with
               `direct=True` read them from the blob through the same img2dataset code
  4. truth     DIR/truth.parquet (uid, clean, noise_type, class, ...), kept out of metadata/ and shards/, when
               there is a truth (labels, the source's clean flags, or injected noise); DIR/source_rows.parquet
               (uid -> the source's own row and file) for sources that name their items (--source folder)
  5. eval      DIR/eval/<source> (zero-shot classification, labelled sources) and DIR/eval/<source>_retrieval
  6. DIR/make_pool.json (arguments, counts, measured noise mix, timings), then DIR/.complete, written last.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .atomic import atomic_open, write_json
from .errors import BadInputError, SfcompError
from .guard import refuse_foreign_folder
from .sources import DEFAULT_SOURCE, Source

METADATA_COLUMNS = ["uid", "url", "text", "original_width", "original_height", "clip_b32_similarity_score",
                    "clip_l14_similarity_score", "face_bboxes", "sha256"]
TRUTH_COLUMNS = ["uid", "clean", "noise_type", "class", "variant", "source_index", "served"]


def _metadata_schema():
    import pyarrow as pa

    return pa.schema([
        ("uid", pa.string()), ("url", pa.string()), ("text", pa.string()),
        ("original_width", pa.int64()), ("original_height", pa.int64()),
        ("clip_b32_similarity_score", pa.float32()), ("clip_l14_similarity_score", pa.float32()),
        ("face_bboxes", pa.list_(pa.list_(pa.float64()))), ("sha256", pa.string()),
    ])


def n_metadata_files(size: int) -> int:
    """A few files, as a real pool has (DataComp: one per ~505k rows); ~15k rows a file here."""
    return 1 if size < 100 else max(2, min(8, size // 15000))


def _split_bounds(n: int, k: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, k + 1).round().astype(int)
    return [(int(edges[i]), int(edges[i + 1])) for i in range(k)]


class PoolBuilder:
    def __init__(self, out: str | os.PathLike, source: str | Source = DEFAULT_SOURCE, size: int | None = None,
                 noise: float | None = None, noise_mix: str = "default", seed: int = 0, direct: bool = False,
                 image_size: int = 64, samples_per_shard: int = 10000, processes: int = 2, threads: int = 32,
                 ref_size: int | None = None, ref_steps: int | None = None, ref_batch_size: int | None = None,
                 retrieval_size: int = 2000, eval_size: int | None = None, timeout: int = 10,
                 progress: bool = True, log: Callable[[str], None] = print):
        from .sources import get_source
        from .sources.noise import get_profile

        self.source = get_source(source)
        self.source.check()
        if noise is None:  # per source: a user's own data gets no injected noise unless asked
            noise = self.source.default_noise
        if ref_size is None:
            ref_size = self.source.reference_size
        self._loaded: dict = {}
        if self.source.default_size is None:  # every item not held out, and no more
            avail = len(self.items(self.source.pool_split)) - int(ref_size)
            if size is not None and size > avail:
                raise BadInputError(None, f"--size {size} is more than the {avail} items left for the pool by "
                                          f"source {self.source.name} ({ref_size} held out for the reference CLIPs)")
            size = avail if size is None else size
        elif size is None:
            size = self.source.default_size
        if size < 1:
            raise SfcompError(f"--size must be positive, got {size}")
        for flag, v, low in (("--seed", seed, 0), ("--image-size", image_size, 1),
                             ("--samples-per-shard", samples_per_shard, 1), ("--ref-steps", ref_steps, 1)):
            if v is not None and v < low:
                raise BadInputError(None, f"{flag} must be >= {low}, got {v}")
        self.profile = get_profile(noise_mix)
        if not self.source.simulate_web and noise == 0:  # exact duplicates only as asked-for noise
            self.profile = dict(self.profile, duplicate_frac=0.0)
        self.out = Path(out)
        self.work = self.out / "_work"
        name = self.source.name if isinstance(source, Source) else source
        self.args = dict(source=name, size=int(size), noise=float(noise), noise_mix=noise_mix, seed=int(seed),
                         image_size=int(image_size), samples_per_shard=int(samples_per_shard),
                         ref_size=int(ref_size), ref_steps=ref_steps, ref_batch_size=ref_batch_size,
                         retrieval_size=int(retrieval_size), eval_size=eval_size)
        if self.source.describe():  # only then: older pools' recorded args stay equal on resume
            self.args["source_input"] = self.source.describe()
        self.timeout = timeout
        self.direct = direct
        self.processes, self.threads = processes, threads
        self.progress, self.log = progress, log
        self.timings: dict[str, float] = {}

    # ---- driver ---------------------------------------------------------------------------------------
    def build(self) -> dict:
        if (self.out / ".complete").exists():
            info = json.loads((self.out / "make_pool.json").read_text())
            if info["args"] != self.args:
                raise SfcompError(f"{self.out}: holds a finished pool built with other arguments "
                                  f"({info['args']}); choose another --out or remove it")
            self.log(f"{self.out}: pool already complete")
            shutil.rmtree(self.work, ignore_errors=True)  # a build killed after its marker
            return info
        self._check_args()
        plan = self._stage("plan", self.plan)
        self._stage("metadata", lambda: self.metadata(plan))
        dl = self._stage("shards", lambda: self.shards(plan))
        self._stage("truth", lambda: self.truth(plan))
        self._stage("eval", self.eval_sets)
        info = self.summary(plan, dl)
        write_json(self.out / "make_pool.json", info)
        with atomic_open(self.out / ".complete", "w") as f:
            f.write("ok\n")
        shutil.rmtree(self.work, ignore_errors=True)  # after the marker: a kill before it leaves a resumable build
        return info

    def _stage(self, name: str, fn):
        t0 = time.perf_counter()
        self.log(f"[make-pool] {name} ...")
        r = fn()
        self.timings[name] = round(time.perf_counter() - t0, 2)
        self.log(f"[make-pool] {name} done in {self.timings[name]:.1f}s")
        return r

    def _check_args(self) -> None:
        args_file = self.work / "args.json"
        if args_file.exists():
            old = json.loads(args_file.read_text())
            if old != self.args:
                raise SfcompError(f"{self.out}: holds a partial pool built with other arguments ({old}); "
                                  f"rerun with the same arguments to resume, or remove the folder")
        else:
            # a build writes metadata/, shards/, reference/, eval/, truth.parquet over what is there and removes
            # _work/ when it finishes: a folder holding anything a killed build's first write could not leave
            # is someone else's
            refuse_foreign_folder(self.out, markers=(".complete", "_work/args.json"),
                                  leftovers=("_work", "_work/.tmp-args.json.*"), what="--out", made_by="make-pool")
            write_json(args_file, self.args)

    def items(self, split: str):
        """The source's items of `split` (sources.base.Items), loaded once."""
        if split not in self._loaded:
            self._loaded[split] = self.source.load(split)
        return self._loaded[split]

    # ---- 1. plan ----------------------------------------------------------------------------------------
    def plan(self):
        import pandas as pd

        from .sources.base import load_images, save_images
        from .sources.pool_plan import PoolPlan, encode_served, plan_pool
        from .sources.serve import write_blob

        plan_file = self.work / "plan.parquet"
        if plan_file.exists() and (self.work / "pixels.npz").exists():  # else re-plan: the plan is deterministic
            table = pd.read_parquet(plan_file)
            pixels = load_images(self.work / "pixels.npz")
            ref = np.load(self.work / "ref_indices.npy")
            return PoolPlan(table=table, pixels=pixels, ref_indices=ref)
        a, src = self.args, self.source
        items = self.items(src.pool_split)
        web = {} if src.simulate_web else dict(fail_404=0.0, fail_corrupt=0.0)  # no dead links, corrupt files
        plan = plan_pool(items.images, items.labels, a["size"], a["noise"], self.profile, a["seed"],
                         ref_size=a["ref_size"], texts=items.texts, vocab=src.caption_vocab(),
                         served_sides=src.served_sides, served_side_p=src.served_side_p, **web)
        files, sha = encode_served(plan, a["seed"] + 1)
        t = plan.table
        t["sha256"] = sha
        if items.files is not None:
            _serve_own_files(plan, items, files)
        ext = np.where(t["format"].isin(["png", "webp"]), t["format"], "jpg")
        t["path"] = ["/img/" + u[:2] + "/" + u + "." + e for u, e in zip(t["uid"], ext)]
        # the urls' port is fixed by the seed, so the same seed gives the same metadata; if it is busy at
        # download time the server takes another and only the download's url lists say so
        port = int(np.random.default_rng([a["seed"], 7]).integers(20000, 60000))
        t["url"] = [f"http://127.0.0.1:{port}{p}" for p in t["path"]]
        k = n_metadata_files(len(t))
        stems = [f"{int(x):016x}{int(y):016x}" for x, y in
                 np.random.default_rng([a["seed"], 11]).integers(0, 2**64, (k, 2), dtype=np.uint64)]
        t["file"] = np.zeros(len(t), np.int64)
        for i, (lo, hi) in enumerate(_split_bounds(len(t), k)):
            t.loc[lo : hi - 1, "file"] = i
        spans = write_blob(self.work / "blob.bin", [f if t["fail"].iat[i] != "404" else b""
                                                     for i, f in enumerate(files)])
        t["blob_offset"] = [s[0] for s in spans]
        t["blob_length"] = [s[1] for s in spans]
        save_images(self.work / "pixels.npz", plan.pixels)
        np.save(self.work / "ref_indices.npy", plan.ref_indices)
        write_json(self.work / "stems.json", stems)
        with atomic_open(plan_file, "wb") as f:
            t.to_parquet(f, index=False)
        return plan

    def stems(self) -> list[str]:
        return json.loads((self.work / "stems.json").read_text())

    # ---- 2. metadata -------------------------------------------------------------------------------------
    def metadata(self, plan) -> None:
        import torch

        # one thread: these models are small, and on a shared, oversubscribed CPU torch's threads wait on each
        # other (a training step measured 8x slower with 2 threads than with 1 at load 10 on 2 cores)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            self._metadata(plan)
        finally:
            torch.set_num_threads(before)

    def _metadata(self, plan) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .sources import captions as C
        from .sources import reference_clip as R

        stems, t = self.stems(), plan.table
        meta_dir = self.out / "metadata"
        if all((meta_dir / f"{s}.parquet").exists() for s in stems):
            return
        a = self.args
        items = self.items(self.source.pool_split)
        ref_img = items.images[plan.ref_indices]
        if items.texts is not None:
            ref_text = [items.texts[int(i)] for i in plan.ref_indices]
        else:
            rng = np.random.default_rng([a["seed"], 3])
            vocab = self.source.caption_vocab()
            ref_lab = items.labels[plan.ref_indices]
            cuts = C.class_coverage_cuts(ref_img, ref_lab, vocab.n_classes)
            ref_text = [vocab.caption(int(l), C.pixel_attributes(im, int(l), cuts), rng)
                        for im, l in zip(ref_img, ref_lab)]
        emb = {}
        ref_dir = self.work / "reference"
        ref_dir.mkdir(parents=True, exist_ok=True)
        texts = t["text"].tolist()
        for arch in ("b32", "l14"):
            model, tok, preset = R.train_reference(arch, ref_img, ref_text, seed=a["seed"] + 100, out_dir=ref_dir,
                                                   steps=a["ref_steps"], batch_size=a["ref_batch_size"],
                                                   progress=self.progress,
                                                   image_size=self.source.reference_image_size)
            img, txt = R.embed(model, tok, preset, plan.pixels, texts)
            emb[f"{arch}_img"], emb[f"{arch}_txt"] = R.to_float16_unit(img), R.to_float16_unit(txt)
            # the score is the cosine of the stored (float16) embeddings, as a user recomputing it would get
            emb[f"{arch}_score"] = np.einsum("ij,ij->i", emb[f"{arch}_img"].astype(np.float32),
                                             emb[f"{arch}_txt"].astype(np.float32)).astype(np.float32)
        schema = _metadata_schema()
        for i, stem in enumerate(stems):
            rows = np.flatnonzero(t["file"].to_numpy() == i)
            part = t.iloc[rows]
            with atomic_open(meta_dir / f"{stem}.npz", "wb") as f:
                np.savez(f, **{k: emb[k][rows] for k in ("b32_img", "b32_txt", "l14_img", "l14_txt")})
            table = pa.table({
                "uid": part["uid"].astype(str).tolist(),
                "url": part["url"].tolist(),
                "text": part["text"].tolist(),
                "original_width": part["original_width"].to_numpy(np.int64),
                "original_height": part["original_height"].to_numpy(np.int64),
                "clip_b32_similarity_score": emb["b32_score"][rows],
                "clip_l14_similarity_score": emb["l14_score"][rows],
                "face_bboxes": [[] for _ in range(len(rows))],
                "sha256": part["sha256"].tolist(),
            }, schema=schema)
            with atomic_open(meta_dir / f"{stem}.parquet", "wb") as f:
                pq.write_table(table, f)
        # keep the reference models beside the pool (not in metadata/ or shards/)
        dest = self.out / "reference"
        dest.mkdir(exist_ok=True)
        for p in sorted(ref_dir.glob("*.pt")) + sorted(ref_dir.glob("*.json")):
            shutil.copyfile(p, dest / p.name)

    # ---- 3. shards ---------------------------------------------------------------------------------------
    def expected_shards(self, plan) -> int:
        per = self.args["samples_per_shard"]
        counts = np.bincount(plan.table["file"].to_numpy(), minlength=len(self.stems()))
        return int(sum(math.ceil(c / per) for c in counts))

    def shards(self, plan):
        import pyarrow as pa
        import pyarrow.parquet as pq

        from .download import download, read_stats
        from .sources.serve import BlobServer

        shard_dir = self.out / "shards"
        t = plan.table
        url_port = int(t["url"].iat[0].split(":")[2].split("/")[0])
        served = t[t["fail"] != "404"]
        url_dir = self.work / "urls"
        blob = self.work / "blob.bin"

        def write_url_lists(port: int) -> None:
            for i, stem in enumerate(self.stems()):
                part = t[t["file"] == i]
                table = pa.table({
                    "uid": part["uid"].astype(str).tolist(),
                    "url": [f"http://127.0.0.1:{port}{p}" for p in part["path"]],
                    "text": part["text"].tolist(),
                    "face_bboxes": pa.array([[] for _ in range(len(part))], pa.list_(pa.list_(pa.float64()))),
                })
                with atomic_open(url_dir / f"{stem}.parquet", "wb") as f:
                    pq.write_table(table, f)

        kw = dict(image_size=self.args["image_size"], processes=self.processes, threads=self.threads,
                  samples_per_shard=self.args["samples_per_shard"], timeout=self.timeout, quiet=not self.progress)
        if self.direct:
            write_url_lists(url_port)
            write_json(str(blob) + ".routes.json",
                       {u: [int(o), int(n)] for u, o, n in zip(served["url"], served["blob_offset"],
                                                               served["blob_length"])})
            result = download(url_dir, shard_dir, local_blob=blob, **kw)
        else:
            routes = {p: (int(o), int(n)) for p, o, n in zip(served["path"], served["blob_offset"],
                                                            served["blob_length"])}
            port = url_port if _wait_for_port(url_port) else 0
            with BlobServer(blob, routes, port=port) as server:
                if server.port != url_port:
                    self.log(f"[make-pool] port {url_port} busy; serving on {server.port} (metadata urls keep "
                             f"{url_port})")
                write_url_lists(server.port)
                result = download(url_dir, shard_dir, **kw)
        self.log(f"[make-pool] download: {result.summary()}")
        done = len(read_stats(shard_dir))
        if done != self.expected_shards(plan):
            raise SfcompError(f"{shard_dir}: {done} of {self.expected_shards(plan)} shards finished; "
                              f"rerun make-pool to resume")
        return result

    # ---- 4. truth ----------------------------------------------------------------------------------------
    def truth(self, plan) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        t = plan.table
        items = self.items(self.source.pool_split)
        rows = self.source.item_rows(self.source.pool_split)
        if rows is not None:  # uid -> the source's own item (the user's row and file), for acting on a subset
            src = t["source_index"].to_numpy(np.int64)
            cols = {"uid": t["uid"].astype(str).tolist(), **{k: [v[i] for i in src] for k, v in rows.items()}}
            with atomic_open(self.out / "source_rows.parquet", "wb") as f:
                pq.write_table(pa.table(cols), f)
        if not self.has_truth(items):
            return
        clean, noise_type = t["clean"].to_numpy(bool), t["noise_type"].astype(str).to_numpy(object)
        if items.clean is not None:  # the source's own flags: a caption it marks wrong is noisy whatever we did
            marked = ~items.clean[t["source_index"].to_numpy(np.int64)]
            noise_type[marked & clean] = "marked_noisy"
            clean = clean & ~marked
        table = pa.table({
            "uid": t["uid"].astype(str).tolist(),
            "clean": clean,
            "noise_type": noise_type.tolist(),
            "class": t["class"].to_numpy(np.int64),
            "variant": t["variant"].astype(str).tolist(),
            "source_index": t["source_index"].to_numpy(np.int64),
            "served": t["fail"].map({"ok": "ok", "404": "404", "corrupt": "undecodable"}).astype(str).tolist(),
        })
        with atomic_open(self.out / "truth.parquet", "wb") as f:
            pq.write_table(table, f)

    def has_truth(self, items) -> bool:
        """truth.parquet is written when there is something true to say: labels, the source's clean flags,
        or noise make-pool injected."""
        return items.labels is not None or items.clean is not None or self.args["noise"] > 0

    # ---- 5. eval sets ------------------------------------------------------------------------------------
    def eval_sets(self) -> None:
        from .evalsets import write_classification_set, write_retrieval_set
        from .sources import captions as C

        src = self.source
        eval_dir = self.out / "eval"
        cls_dir, ret_dir = eval_dir / src.eval_name(), eval_dir / f"{src.eval_name()}_retrieval"
        items = self.items(src.eval_split)
        images, labels, texts = items.images, items.labels, items.texts
        if self.args["eval_size"] is not None:  # a quick build (tests): the first eval_size eval items
            k = self.args["eval_size"]
            images = images[:k]
            labels = None if labels is None else labels[:k]
            texts = None if texts is None else texts[:k]
        has_classes = labels is not None and src.classnames is not None
        if has_classes and not (cls_dir / "zeroshot_classification_templates.txt").exists():
            write_classification_set(cls_dir, images, labels, src.classnames, src.zeroshot_templates)
        if not (ret_dir / "dataset_type.txt").exists():
            n = min(self.args["retrieval_size"], len(images))
            rng = np.random.default_rng([self.args["seed"], 5])
            idx = np.sort(rng.choice(len(images), n, replace=False))
            if texts is not None:  # the items' own texts
                caps = [[texts[int(i)]] for i in idx]
            else:  # a plain description and a web-like caption, both clean
                vocab = src.caption_vocab()
                cuts = C.class_coverage_cuts(images, labels, vocab.n_classes)
                caps = []
                for i in idx:
                    at = C.pixel_attributes(images[i], int(labels[i]), cuts)
                    caps.append([vocab.eval_caption(int(labels[i]), at, rng), vocab.caption(int(labels[i]), at, rng)])
            write_retrieval_set(ret_dir, images[idx], caps)

    # ---- 6. summary --------------------------------------------------------------------------------------
    def summary(self, plan, dl) -> dict:
        from .download import read_stats

        t = plan.table
        stats = read_stats(self.out / "shards")
        mix = t["noise_type"].value_counts(normalize=True).round(4).to_dict()
        return {
            "args": self.args,
            "direct": self.direct,
            "requested": int(len(t)),
            "downloaded": int(sum(s["successes"] for s in stats)),
            "failed_to_download": int(sum(s["failed_to_download"] for s in stats)),
            "failed_to_resize": int(sum(s["failed_to_resize"] for s in stats)),
            "shards": len(stats),
            "metadata_files": len(self.stems()),
            "noisy_fraction": round(float(1 - t["clean"].mean()), 4),
            "noise_mix": {k: float(v) for k, v in sorted(mix.items())},
            "profile": self.profile,
            "truth": (self.out / "truth.parquet").exists(),
            **self.source.report(),
            "timings_s": self.timings,
        }


def _serve_own_files(plan, items, files: list[bytes]) -> None:
    """Rows showing an item unaltered (originals and their exact duplicates) serve the item's own file, with its
    real size; altered copies (injected noise) keep the plan's re-encoding."""
    import hashlib

    t = plan.table
    src = t["source_index"].to_numpy(np.int64)
    for i in range(len(t)):
        own = items.files[int(src[i])]
        shown = plan.pixels[i]
        if t["fail"].iat[i] != "ok" or not np.array_equal(shown, items.images[int(src[i])]):
            continue
        files[i] = own.data
        t.iat[i, t.columns.get_loc("sha256")] = hashlib.sha256(own.data).hexdigest()
        t.iat[i, t.columns.get_loc("original_width")] = own.width
        t.iat[i, t.columns.get_loc("original_height")] = own.height
        t.iat[i, t.columns.get_loc("format")] = own.ext


def make_pool(out: str | os.PathLike, **kwargs) -> dict:
    """Build (or resume) a demo pool at `out`; returns the summary written to out/make_pool.json."""
    return PoolBuilder(out, **kwargs).build()


def _wait_for_port(port: int, seconds: float = 20.0) -> bool:
    """True once 127.0.0.1:`port` can be bound, trying for up to `seconds`: the metadata's urls name this port,
    and a client socket that happens to hold it (it lies in the kernel's ephemeral range) lets go in moments."""
    from .sources.serve import try_port

    deadline = time.monotonic() + seconds
    while not try_port(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)
    return True

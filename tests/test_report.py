"""The round report adapts to what a pool's truth holds: the demo's columns, another label column, labels
without a `clean` column, or no truth at all; report.png has one panel per figure it has (no blank panel)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from sfcomp import uids as U
from sfcomp.report import write_round_report

N = 200


def _report(tmp_path, truth, emb=True):
    rng = np.random.default_rng(0)
    uids = U.sort_uids(U.hex_to_uids([f"{i:032x}" for i in range(N)]))
    fields = {"crossfit": rng.normal(size=N).astype(np.float32)}
    next_mix = uids[np.argsort(-fields["crossfit"])[: N // 3]]
    sample = (uids[:100], rng.normal(size=(100, 8)).astype(np.float32)) if emb else None
    rep = write_round_report(tmp_path, 0, uids, fields, "crossfit", uids, U.sort_uids(next_mix), sample, truth,
                             top_frac=0.3, kmeans_k=4, seed=0, errors={}, timings={})
    width = Image.open(tmp_path / "report.png").size[0]
    assert json.loads((tmp_path / "report.json").read_text())["round"] == 0
    return rep, width


PANEL = 5 * 80  # figure inches x dpi per panel


@pytest.mark.parametrize("truth,drift,column,panels", [
    ({"clean": np.arange(N) % 2 == 0, "class": np.arange(N) % 5}, True, None, 3),                  # the demo's
    ({"clean": np.arange(N) % 2 == 0, "label": np.array(["cat", "dog"] * (N // 2))}, True, "label", 3),
    ({"label": np.array(["a", "b", "c", "d"] * (N // 4))}, True, "label", 3),                         # no clean
    ({"clean": np.arange(N) % 2 == 0}, False, None, 2),                                              # no labels
    (None, False, None, 2),                                                                          # no truth
])
def test_report_follows_the_truth_it_has(tmp_path, truth, drift, column, panels):
    rep, width = _report(tmp_path, truth)
    assert ("class_drift" in rep) == drift
    if drift:
        assert rep["class_drift"].get("column") == column
        assert abs(sum(rep["class_drift"]["pool_share"]) - 1) < 1e-6
    assert ("top_k" in rep) == (truth is not None and "clean" in truth)
    assert width == panels * PANEL


def test_report_without_embeddings_or_truth_is_one_panel(tmp_path):
    rep, width = _report(tmp_path, None, emb=False)
    assert "cluster_drift" not in rep and width == PANEL

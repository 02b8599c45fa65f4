"""Metric values on hand-made masks, including the edge cases the README defines."""

from __future__ import annotations

import math

import pytest
import torch

from ansm.eval.evaluate import evaluate
from ansm.eval.metrics import LocalizationMeter, best_threshold_f1, f1_score, iou_score, pixel_auc, roc_auc


def _m(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)[None, None]


def test_f1_iou_by_hand() -> None:
    mask = _m([[1, 1, 0, 0]])
    prob = _m([[0.9, 0.2, 0.7, 0.1]])  # TP=1, FN=1, FP=1
    assert f1_score(prob, mask).item() == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    assert iou_score(prob, mask).item() == pytest.approx(1 / 3)
    assert f1_score(prob, mask, threshold=0.8).item() == pytest.approx(2 / 3)  # TP=1, FN=1, FP=0
    assert f1_score(_m([[0.5, 0.5, 0.2, 0.2]]), mask).item() == 0.0  # 0.5 is not > 0.5


def test_empty_mask_conventions() -> None:
    empty = _m([[0, 0, 0, 0]])
    assert f1_score(_m([[0.1, 0.2, 0.3, 0.4]]), empty).item() == 1.0  # both empty: perfect
    assert iou_score(_m([[0.1, 0.2, 0.3, 0.4]]), empty).item() == 1.0
    assert f1_score(_m([[0.9, 0.2, 0.3, 0.4]]), empty).item() == 0.0  # any false alarm: zero
    assert f1_score(_m([[0.1, 0.1, 0.1, 0.1]]), _m([[1, 0, 0, 0]])).item() == 0.0  # missed everything


def test_best_threshold_and_aucs() -> None:
    mask = _m([[1, 1, 0, 0]])
    prob = _m([[0.4, 0.3, 0.2, 0.1]])  # ranks perfectly but below 0.5
    assert f1_score(prob, mask).item() == 0.0
    assert best_threshold_f1(prob, mask).item() == pytest.approx(1.0)
    assert pixel_auc(prob, mask).item() == pytest.approx(1.0)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5], [0, 1]) == pytest.approx(0.5)  # ties share ranks
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_meter_averages_over_forged_only_and_image_auc() -> None:
    meter = LocalizationMeter()
    masks = torch.cat([_m([[1, 1, 0, 0]]), _m([[1, 0, 0, 0]]), _m([[0, 0, 0, 0]])])
    probs = torch.cat([_m([[0.9, 0.9, 0.1, 0.1]]), _m([[0.1, 0.1, 0.1, 0.1]]), _m([[0.6, 0.1, 0.1, 0.1]])])
    meter.update(probs, masks, ["a", "b", "auth"])
    r = meter.compute()
    assert (r["n_images"], r["n_forged"]) == (3, 2)
    assert r["f1"] == pytest.approx((1.0 + 0.0) / 2)  # the authentic image's F1 (0) is not averaged in
    assert r["authentic_fp_rate"] == pytest.approx(0.25)
    assert r["image_auc"] == pytest.approx(0.5)  # scores 0.9, 0.1 (forged) vs 0.6 (authentic)


def test_all_authentic_set_reports_nan_not_zero() -> None:
    meter = LocalizationMeter()
    meter.update(torch.zeros(2, 1, 2, 2), torch.zeros(2, 1, 2, 2))
    r = meter.compute()
    assert r["n_forged"] == 0 and math.isnan(r["f1"]) and math.isnan(r["image_auc"])
    assert r["authentic_fp_rate"] == 0.0


def test_evaluate_batches_mixed_sizes() -> None:
    class Oracle(torch.nn.Module):  # predicts the mask it is told about through the image's red channel
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x[:, :1] - 0.5) * 20

    items = []
    for h, w in ((4, 6), (4, 6), (5, 3)):
        mask = torch.zeros(1, h, w)
        mask[..., 0, 0] = 1
        items.append({"image": mask.repeat(3, 1, 1), "mask": mask, "name": f"{h}x{w}"})
    calls = []
    r = evaluate(Oracle(), items, batch_size=8, on_item=calls.append)
    assert r["f1"] == 1.0 and calls == [2, 1]

"""The benchmark's sanity checks catch a masked defense and pass the bare localizer.

The masked defense is 8-bit rounding in front of the localizer: on 8-bit images it changes no prediction, but its
gradient is zero, so every gradient attack through it stands still and the defense *looks* robust. The checks
must say otherwise (the gradient-free attack still breaks it; an unbounded budget does not take it to 0).
"""

from __future__ import annotations

import pytest
import torch

from ansm.benchmark import preset_config
from ansm.benchmark.defenses import Defense
from ansm.benchmark.report import build_report
from ansm.benchmark.run import plan_units, run_unit


class Round8(torch.nn.Module):
    """Quantise to 8 bits: harmless on 8-bit images, zero gradient everywhere (gradient masking)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 255) / 255


@pytest.fixture(scope="module")
def checked(trained_localizer, synthetic_batch, tmp_path_factory):
    loc = trained_localizer
    for p in loc.parameters():
        p.requires_grad_(False)
    x, m = synthetic_batch["image"][:8], synthetic_batch["mask"][:8]
    batches = [(x, m, [str(i) for i in range(len(x))])]
    cfg = preset_config("quick", out=str(tmp_path_factory.mktemp("checks")), data="synthetic:8", size=64,
                        defenses=["none"], threats=["oblivious", "adaptive"], eps_grid=["8/255"],
                        adaptive_eps=["8/255"], adaptive_objectives=["untargeted"], pgd_steps=5, adaptive_steps=6,
                        steps_curve=[3, 6], unbounded_steps=10, square_queries=100, tolerance=0.05)
    defenses = [Defense("none", "none", loc), Defense("masked", "transform", loc, Round8())]
    units = plan_units(cfg, defenses)
    cells = {u.key: run_unit(u, cfg, batches, defenses, loc, None, torch.device("cpu"), lambda _n: None) for u in units}
    report = build_report(cfg, defenses, units, cells)
    return {(r["check"], r["subject"].split(" ")[0]): r for r in report["checks"]["results"]}, report


def test_masked_defense_is_flagged(checked) -> None:
    results, report = checked
    assert not results[("gradient-free attack not stronger", "masked")]["ok"], results
    assert not results[("unbounded budget takes F1 to ~0", "masked")]["ok"], results
    assert report["checks"]["failed"] >= 2 and any(line.startswith("  FAIL") for line in report["checks"]["lines"])


def test_bare_localizer_passes_the_same_checks(checked) -> None:
    results, _ = checked
    for check in ("gradient-free attack not stronger", "unbounded budget takes F1 to ~0", "gradient attack >= oblivious"):
        assert results[(check, "none")]["ok"], results[(check, "none")]

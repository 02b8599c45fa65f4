"""The benchmark end to end on a tiny grid (seconds), its attacks' invariants, its checks and its reports."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ansm.benchmark import preset_config, run_benchmark
from ansm.benchmark.report import sanity_checks
from ansm.benchmark.threats import TrackedPGD, adaptive_attack
from ansm.errors import CheckpointError, ConfigError
from ansm.eval.metrics import f1_score

TINY = dict(data="synthetic:8", size=32, loc_steps=15, loc_pool=24, loc_batch=8, ansm_stage1_steps=2,
            ansm_stage2_steps=3, ansm_pool=12, ansm_batch=4, advft_steps=2, adaptive_steps=4, steps_curve=[1, 2, 4],
            pgd_steps=2, batch_size=8, device="cpu", eps_grid=["4/255", "8/255"],
            adaptive_eps=["4/255", "8/255"],
            tolerance=0.05)  # 8 images: one image's F1 moving by 0.4 moves a mean by 0.05


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, trained_localizer_path):
    out = tmp_path_factory.mktemp("bench") / "run"
    cfg = preset_config("quick", out=str(out), localizer=str(trained_localizer_path), **TINY)
    return cfg, run_benchmark(cfg, log=lambda _s: None)


def test_report_has_every_defense_threat_and_file(tiny_run) -> None:
    cfg, report = tiny_run
    assert list(report["clean"]) == ["none", "ansm", "jpeg-75", "jpeg-90", "median-3", "blur-1", "bits-5",
                                     "denoiser-pixel", "denoiser-feature", "adv-finetune"]
    threats = {r["threat"] for r in report["rows"]}
    assert threats == {"oblivious", "transfer", "gray-box", "adaptive"}
    assert report["clean"]["ansm"]["n_seeds"] == 2 and report["clean"]["ansm"]["f1_sd"] is not None
    assert report["defenses"]["jpeg-75"]["bpda"] and not report["defenses"]["median-3"]["bpda"]
    out = cfg.out
    html = open(f"{out}/report.html").read()
    assert html.count("data:image/png;base64,") == 3 and "http" not in html.split("<body>")[1]  # self-contained
    md = open(f"{out}/report.md").read()
    assert "| defense | seeds | clean F1 |" in md and "sanity checks:" in md
    assert json.loads(open(f"{out}/report.json").read())["checks"]["failed"] == report["checks"]["failed"]


def test_sanity_checks_pass_and_numbers_are_consistent(tiny_run) -> None:
    cfg, report = tiny_run
    assert report["checks"]["failed"] == 0, report["checks"]["lines"]
    assert report["checks"]["passed"] >= 10
    none_clean = report["clean"]["none"]
    assert none_clean["retention"] == pytest.approx(1.0) and none_clean["f1"] == pytest.approx(report["f1_clean"])
    for row in report["rows"]:
        assert 0 <= row["f1"] <= 1
        if row["defense"] == "none" and row["recovery"] is not None:
            assert row["recovery"] == pytest.approx(0.0, abs=1e-9)  # the reference of recovery is the bare model
    for group, w in report["worst_case"].items():  # worst case is never above any single attack at eps_main
        singles = [r["f1"] for r in report["rows"] if r["defense"] == group and abs(r["eps"] - cfg.eps_main) < 1e-9]
        assert w["f1"] <= min(singles) + 1e-9


def test_resume_reuses_cells_and_refuses_a_changed_config(tiny_run, trained_localizer_path) -> None:
    cfg, report = tiny_run
    again = run_benchmark(cfg, log=lambda _s: None)
    assert again["rows"] == report["rows"]
    assert again["timings_s"]["attacks"] < 5
    changed = preset_config("quick", out=cfg.out, localizer=str(trained_localizer_path), **{**TINY, "adaptive_steps": 5,
                                                                                             "steps_curve": [1, 5]})
    with pytest.raises(CheckpointError, match="adaptive_steps"):
        run_benchmark(changed, log=lambda _s: None)


def test_a_violated_invariant_is_reported_as_a_failure(tiny_run) -> None:
    cfg, report = tiny_run
    broken = json.loads(json.dumps(report))
    for row in broken["rows"]:
        if row["threat"] == "adaptive" and row["defense"] == "jpeg-75":
            for s in row["seeds"].values():
                s["f1"] = 1.0  # an adaptive attack weaker than the oblivious one
    broken["steps_curves"]["none"] = {"1": 0.2, "2": 0.5}
    checks = sanity_checks(broken, cfg)
    failed = {(r["check"], r["subject"].split(" ")[0]) for r in checks["results"] if not r["ok"]}
    assert ("adaptive >= oblivious", "jpeg-75") in failed and ("more steps never raise F1", "none") in failed


def test_tracked_pgd_stays_in_budget_and_keeps_its_best_iterate(trained_localizer, synthetic_batch) -> None:
    x, m = synthetic_batch["image"][:4], synthetic_batch["mask"][:4]
    atk = TrackedPGD(trained_localizer, eps=4 / 255, steps=6, checkpoints=[0, 3, 6])
    x_a = atk(x, m, generator=torch.Generator().manual_seed(1))
    assert (x_a - x).abs().max() <= 4 / 255 + 1e-6
    assert set(atk.snapshots) == {0, 3, 6} and torch.equal(atk.snapshots[6], x_a)
    with torch.no_grad():
        gains = [atk.objective.gain(trained_localizer(atk.snapshots[k]), m) for k in (0, 3, 6)]
    assert bool((gains[1] >= gains[0] - 1e-6).all() and (gains[2] >= gains[1] - 1e-6).all())


def test_adaptive_worst_case_is_never_above_a_candidate(trained_localizer, synthetic_batch) -> None:
    x, m = synthetic_batch["image"][:6], synthetic_batch["mask"][:6]
    candidate = (x + 4 / 255 * torch.randn_like(x).sign()).clamp(0, 1)
    x_a, curve = adaptive_attack(trained_localizer, trained_localizer, x, m, 4 / 255, 3, 1, ["untargeted", "hide"],
                                 torch.Generator().manual_seed(0), [1, 3], [candidate])
    with torch.no_grad():
        f1 = f1_score(torch.sigmoid(trained_localizer(x_a)), m)
        f1_cand = f1_score(torch.sigmoid(trained_localizer(candidate)), m)
    assert bool((f1 <= f1_cand + 1e-9).all()) and torch.allclose(curve[3].double(), f1.double())
    assert bool((curve[3] <= curve[1] + 1e-9).all())


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "huge"}, "unknown preset"),
    ({"nonsense": 1}, "unknown benchmark setting"),
    ({"eps_main": "3/255"}, "eps_main"),
    ({"defenses": ["ansm", "jpeg"]}, "include 'none'"),
    ({"ansm_seeds": 1}, "gray-box"),
])
def test_config_errors(kwargs, message) -> None:
    preset = kwargs.pop("preset", "quick")
    with pytest.raises(ConfigError, match=message):
        preset_config(preset, **kwargs)


def test_presets_quick_and_full_exist_and_differ() -> None:
    quick, full = preset_config("quick"), preset_config("full")
    assert full.adaptive_steps >= 100 and full.adaptive_restarts >= 2 and full.ansm_seeds >= 3
    assert quick.adaptive_steps >= 100 and math.isclose(quick.eps_main, 8 / 255)


def test_budget_lists_accept_one_value_or_a_comma_separated_string() -> None:
    cfg = preset_config("quick", eps_grid="8/255, 2/255", adaptive_eps="8/255")
    assert cfg.eps_grid == pytest.approx([2 / 255, 8 / 255]) and cfg.adaptive_eps == pytest.approx([8 / 255])


def test_real_images_of_mixed_sizes(shared_dir, trained_localizer_path, tmp_path) -> None:
    """Three CASIA forgeries (different sizes, JPEG + PNG masks) copied to a temporary dataset folder."""
    import shutil

    data = tmp_path / "casia3"
    data.mkdir()
    masks = sorted((shared_dir / "data" / "casia1").glob("*_gt.png"))[:3]
    for mask in masks:
        image = next(p for p in mask.parent.glob(mask.name.replace("_gt.png", ".*")) if not p.name.endswith("_gt.png"))
        shutil.copy(image, data)
        shutil.copy(mask, data)
    cfg = preset_config("quick", out=str(tmp_path / "run"), localizer=str(trained_localizer_path), data=str(data),
                        max_side=96, defenses=["none", "jpeg"], threats=["oblivious", "adaptive"],
                        **{k: v for k, v in TINY.items() if k not in ("data",)})
    report = run_benchmark(cfg, log=lambda _s: None)
    assert report["data"]["n_images"] == 3 and report["checks"]["failed"] == 0
    assert {r["defense"] for r in report["rows"]} == {"none", "jpeg-75", "jpeg-90"}

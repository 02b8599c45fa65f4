"""The benchmark end to end on a tiny grid (seconds), its attacks' invariants, its checks and its reports."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import pytest
import torch

from ansm.benchmark import preset_config, run_benchmark
from ansm.benchmark.report import _row, sanity_checks
from ansm.benchmark.threats import TrackedPGD, adaptive_attack
from ansm.errors import CheckpointError, ConfigError
from ansm.eval.metrics import f1_score

TINY = dict(data="synthetic:8", size=32, loc_steps=15, loc_pool=24, loc_batch=8, ansm_stage1_steps=2,
            ansm_stage2_steps=3, ansm_pool=12, ansm_batch=4, advft_steps=2, adaptive_steps=4, steps_curve=[1, 2, 4],
            pgd_steps=2, batch_size=8, device="cpu", eps_grid=["4/255", "8/255"],
            adaptive_eps=["4/255", "8/255"], unbounded_steps=4, square_queries=10,
            tolerance=0.05)  # 8 images: one image's F1 moving by 0.4 moves a mean by 0.05


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, trained_localizer_path):
    out = tmp_path_factory.mktemp("bench") / "run"
    cfg = preset_config("quick", out=str(out), localizer=str(trained_localizer_path), **TINY)
    return cfg, run_benchmark(cfg, log=lambda _s: None)


def test_report_has_every_defense_threat_and_file(tiny_run) -> None:
    cfg, report = tiny_run
    assert list(report["clean"]) == ["none", "ansm", "ansm-robust", "jpeg-75", "jpeg-90", "median-3", "blur-1", "bits-5",
                                     "denoiser-pixel", "denoiser-feature", "adv-finetune"]
    threats = {r["threat"] for r in report["rows"]}
    assert threats == {"oblivious", "transfer", "gray-box", "adaptive", "adaptive-gradient", "unbounded", "gradient-free"}
    assert report["clean"]["ansm"]["n_seeds"] == report["clean"]["ansm-robust"]["n_seeds"] == 2
    assert report["clean"]["ansm"]["f1_sd"] is not None
    assert report["defenses"]["jpeg-75"]["bpda"] and not report["defenses"]["median-3"]["bpda"]
    out = cfg.out
    html = open(f"{out}/report.html").read()
    assert html.count("data:image/png;base64,") == 3 and "http" not in html.split("<body>")[1]  # self-contained
    md = open(f"{out}/report.md").read()
    assert "| defense | seeds | clean F1 |" in md and "sanity checks:" in md
    assert json.loads(open(f"{out}/report.json").read())["checks"]["failed"] == report["checks"]["failed"]


def test_sanity_checks_run_and_numbers_are_consistent(tiny_run) -> None:
    """Whether the checks pass on a 4-step attack over 8 images is not the point here (test_checks.py shows them
    flag a masked defense and pass the bare localizer); here: every defense gets every check."""
    cfg, report = tiny_run
    by_check: dict[str, set[str]] = {}
    for r in report["checks"]["results"]:
        by_check.setdefault(r["check"], set()).add(r["subject"].split(" ")[0])
    keys = {k for row in report["rows"] if row["threat"] == "adaptive" for k in row["seeds"]}
    for check in ("unbounded budget takes F1 to ~0", "gradient-free attack not stronger", "gradient attack >= oblivious"):
        assert by_check[check] == keys, (check, by_check.get(check))
    counts = {c: sum(r["check"] == c for r in report["checks"]["results"]) for c in by_check}
    assert counts["converged (doubling the steps)"] == len(report["clean"])
    assert counts["larger eps never raises F1"] == len(report["clean"]) + 1  # + oblivious PGD on the bare model
    none_clean = report["clean"]["none"]
    assert none_clean["retention"] == pytest.approx(1.0) and none_clean["f1"] == pytest.approx(report["f1_clean"])
    for row in report["rows"]:
        assert 0 <= row["f1"] <= 1
        assert row["f1_ci"][0] <= row["f1"] + 1e-9 and row["f1"] <= row["f1_ci"][1] + 1e-9
        if row["threat"] == "gray-box" or report["data"]["n_forged"] < 20:
            assert row["recovery"] is None  # no matching reference / too few images for a ratio
        gradient = _row(report, "adaptive-gradient", row["attack"], row["eps"], row["defense"])
        if row["threat"] == "adaptive":  # the oblivious images are folded in: never above the gradient attack alone
            assert row["f1"] <= gradient["f1"] + 1e-9
    for group, w in report["worst_case"].items():  # worst case is never above any single attack at eps_main
        singles = [r["f1"] for r in report["rows"] if r["defense"] == group and abs(r["eps"] - cfg.eps_main) < 1e-9]
        assert w["f1"] <= min(singles) + 1e-9


def test_resume_reuses_cells_and_refuses_a_changed_config(tiny_run, trained_localizer_path, tmp_path) -> None:
    cfg, report = tiny_run
    again = run_benchmark(cfg, log=lambda _s: None)
    assert again["rows"] == report["rows"]
    assert again["timings_s"]["attacks"] < 5
    # a moved folder (another `out`) is the same run: it resumes instead of being refused
    moved = tmp_path / "moved"
    shutil.copytree(cfg.out, moved)
    resumed = run_benchmark(dataclasses.replace(cfg, out=str(moved)), log=lambda _s: None)
    assert resumed["rows"] == report["rows"] and resumed["timings_s"]["attacks"] < 5
    # a run started before a setting existed used its default: it resumes at the default, and is refused at another
    saved = json.loads((moved / "benchmark.json").read_text())
    del saved["config"]["robust_pixel"]
    (moved / "benchmark.json").write_text(json.dumps(saved))
    assert run_benchmark(dataclasses.replace(cfg, out=str(moved)), log=lambda _s: None)["rows"] == report["rows"]
    with pytest.raises(CheckpointError, match="robust_pixel"):
        run_benchmark(dataclasses.replace(cfg, out=str(moved), robust_pixel=0.5), log=lambda _s: None)
    changed = preset_config("quick", out=cfg.out, localizer=str(trained_localizer_path), **{**TINY, "adaptive_steps": 5,
                                                                                             "steps_curve": [1, 5]})
    with pytest.raises(CheckpointError, match="adaptive_steps"):
        run_benchmark(changed, log=lambda _s: None)


def test_a_violated_invariant_is_reported_as_a_failure(tiny_run) -> None:
    cfg, report = tiny_run
    broken = json.loads(json.dumps(report))
    for row in broken["rows"]:
        if row["defense"] == "jpeg-75":
            for s in row["seeds"].values():
                if row["threat"] == "unbounded":
                    s["f1"] = 0.5  # survives an unbounded budget: a masked gradient or a broken projection
                if row["threat"] == "gradient-free":
                    s["f1"] = 0.0  # Square beats every gradient attack: obfuscated gradients
    broken["steps_curves"]["none"] = {str(cfg.adaptive_steps // 2): 0.5, str(cfg.adaptive_steps): 0.2}
    checks = sanity_checks(broken, cfg)
    failed = {(r["check"], r["subject"].split(" ")[0]) for r in checks["results"] if not r["ok"]}
    assert {("unbounded budget takes F1 to ~0", "jpeg-75"), ("gradient-free attack not stronger", "jpeg-75"),
            ("converged (doubling the steps)", "none")} <= failed


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
    res = adaptive_attack(trained_localizer, trained_localizer, x, m, 4 / 255, 3, 1, ["untargeted", "hide"],
                          torch.Generator().manual_seed(0), [1, 3], [candidate])
    with torch.no_grad():
        f1 = f1_score(torch.sigmoid(trained_localizer(res.worst)), m)
        f1_grad = f1_score(torch.sigmoid(trained_localizer(res.gradient)), m)
        f1_cand = f1_score(torch.sigmoid(trained_localizer(candidate)), m)
    assert bool((f1 <= f1_cand + 1e-9).all()) and bool((f1 <= f1_grad + 1e-9).all())
    assert torch.allclose(res.curve[3].double(), f1_grad.double())  # the curve follows the gradient attack alone
    assert bool((res.curve[3] <= res.curve[1] + 1e-9).all())
    assert (res.gradient - x).abs().max() <= 4 / 255 + 1e-6


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "huge"}, "unknown preset"),
    ({"nonsense": 1}, "unknown benchmark setting"),
    ({"eps_main": "3/255"}, "eps_main"),
    ({"defenses": ["ansm", "jpeg"]}, "include 'none'"),
    ({"ansm_seeds": 1}, "gray-box"),
    ({"robust_eps_min": "5/255", "robust_eps_max": "3/255"}, "robust_eps_min <= robust_eps_max"),
    ({"robust_pixel": -1}, "robust_pixel"),
])
def test_config_errors(kwargs, message) -> None:
    preset = kwargs.pop("preset", "quick")
    with pytest.raises(ConfigError, match=message):
        preset_config(preset, **kwargs)


def test_presets_quick_and_full_exist_and_differ() -> None:
    quick, full = preset_config("quick"), preset_config("full")
    assert full.adaptive_steps >= 100 and full.adaptive_restarts >= 2 and full.ansm_seeds >= 3
    assert quick.adaptive_steps >= 100 and math.isclose(quick.eps_main, 8 / 255)
    # the informed preset: the side by side (3 seeds, restarts, 2/4/8 /255) at the quick preset's sizes
    informed = preset_config("informed")
    assert {"ansm", "ansm-robust", "adv-finetune"} <= set(informed.defenses) and "adaptive" in informed.threats
    assert informed.ansm_seeds == informed.baseline_seeds == 3 and informed.adaptive_restarts >= 2
    assert [round(e * 255) for e in informed.adaptive_eps] == [2, 4, 8] and informed.size == quick.size
    assert informed.advft_budget == informed.ansm_stage1_steps + informed.ansm_stage2_steps  # equal step budgets


def test_budget_lists_accept_one_value_or_a_comma_separated_string() -> None:
    cfg = preset_config("quick", eps_grid="8/255, 2/255", adaptive_eps="8/255")
    assert cfg.eps_grid == pytest.approx([2 / 255, 8 / 255]) and cfg.adaptive_eps == pytest.approx([8 / 255])


@pytest.mark.parametrize("setting", [{"eps_main": "8"}, {"eps_grid": "4/255,8"}, {"eps_grid": ""}])
def test_a_budget_without_its_255_is_refused_by_name(setting) -> None:
    """``--set eps_main=8`` is always a forgotten ``/255``: one line naming the setting, not a run at eps 8."""
    with pytest.raises(ConfigError, match=next(iter(setting))):
        preset_config("quick", **setting)


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
    assert report["data"]["n_images"] == 3 and report["checks"]["results"]
    assert {r["defense"] for r in report["rows"]} == {"none", "jpeg-75", "jpeg-90"}

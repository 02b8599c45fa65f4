"""The whole pipeline in one call (what ``ansm demo`` and ``make demo`` run), sized for 2 CPU cores in minutes.

1. synthesize training forgeries and train the built-in localizer;
2. build two anti-forensics sets (PGD and FGSM on training images, ``ansm attack``'s builder);
3. train ANSM from them: stage 1 alignment (pixel term, FFA weight ``align_ffa``) then stage 2 MgR (the stage-1
   checkpoint is the stage-1-only ablation), and a stage-2-only ANSM for the other half of the ablation;
4. evaluate on held-out synthetic images (test split: photos never used in training) against PGD L-inf and
   FGSM at 8/255, plus a PGD that attacks through ANSM (adaptive, the honest number);
5. apply the same ANSM to ``../shared/data`` attacked with PGD when it is present;
6. write ``report.md``, ``report.json`` and ``figure.png`` in the output folder.

Every stage is resumable (each writes its own checkpoints), so an interrupted demo started again picks up
where it stopped; the evaluation is always recomputed (it is seeded, so it gives the same numbers).
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ansm.errors import ConfigError


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    seed: int = 0
    size: int = 64  # side of the synthetic images (training and held-out test)
    loc_steps: int = 500
    loc_pool: int = 800
    loc_batch: int = 16
    # Benign-noise augmentation of the localizer (TrainLocalizerConfig.noise_std). Without it Gaussian noise of std
    # 1/255 costs the localizer 0.09 F1, so any residue ANSM leaves, on attacked or clean images, reads as an attack.
    # Measured (demo, seed 0): f1_clean_def 0.549 -> 0.639 (clean 0.664 -> 0.644), FGSM recovery -0.04 -> 0.10,
    # PGD 0.47 -> 0.44. docs/ansm.md has the table.
    loc_noise_std: float = 8 / 255
    # ANSM learns from two offline anti-forensics sets built on the same training images (PGD-10 and FGSM, both
    # 8/255): with no attack in the training loop a step costs one ANSM pass, so many more steps fit in the budget.
    attack_n: int = 768
    # Stage 1 aligns the defended adversarial image with the original in pixel space (ffa_pixel, FFA weight
    # align_ffa); stage 2 is MgR with that pixel term kept, at a lower peak lr (it fine-tunes what stage 1 learned).
    # Why not FFA in stage 1: beside the pixel term it cost clean F1 and FGSM recovery; why these step counts: on
    # the tuning set 1600 + 400 or 2400 + 200 sit at the 0.7 PGD bar, 2400 + 400 clears it (docs/ansm.md, "How the
    # recovery target was reached").
    stage1_steps: int = 2400
    stage2_steps: int = 400
    align_ffa: float = 0.0
    align_pixel: float = 1 / 8  # L1 in units of 8/255 (the attack budget)
    mgr_pixel: float = 1 / 8
    stage2_lr: float = 5e-4
    # The stage-2-only ablation (MgR from the identity) runs half the full run's stage 2: with all 400 steps the
    # demo took 591 s of its 10 minutes on a fresh clone. Measured with 400 steps: PGD 0.279 (recovery 0.43),
    # FGSM 0.377 (0.36).
    ablation_stage2_steps: int = 200
    ansm_batch: int = 16
    eps_d: float = 16 / 255
    test_n: int = 96  # held-out synthetic test images
    adaptive_n: int = 32  # of those, attacked adaptively (through ANSM)
    shared: str | None = "auto"  # folder with real datasets; "auto": $ANSM_SHARED/data or ../shared/data
    shared_per_dataset: int = 8  # forged images per real dataset
    shared_max_side: int = 256
    examples: int = 6
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("size", "loc_steps", "loc_pool", "attack_n", "test_n", "examples", "ablation_stage2_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


Step = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)

# The localizer the demo (and the benchmark) defends: twostream *without* its JPEG-grid stream. That stream reads
# 8x8 quantisation traces, which any noise (the attack's, or ANSM's own perturbation) wipes out and no input-side
# defense can restore; its periodic features also give ANSM's training gradients that swamp the rest (measured:
# ANSM then collapses to a uniform +-eps_d shift, PGD recovery 0.04 vs 0.47 without the stream; docs/ansm.md).
DEFENDED_LOCALIZER_KWARGS: dict[str, Any] = {"jpeg_grid": False}


def _shared_root(spec: str | None) -> Path | None:
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        env = os.environ.get("ANSM_SHARED")
        candidates = [Path(env) / "data"] if env else []
        candidates.append(Path.cwd().parent / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[3] / "shared" / "data")
        return next((c for c in candidates if c.is_dir()), None)
    p = Path(spec)
    if not p.is_dir():
        raise ConfigError(f"--shared {p}: no such folder")
    return p


def _pgd(eps: float = 8 / 255, steps: int = 10) -> dict[str, Any]:
    return {"eps": eps, "alpha": 2 / 255, "steps": steps}


def run_demo(cfg: DemoConfig, step: Step | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the pipeline (module docstring) and return the report dict also written to ``report.json``."""
    from ansm.attacks import create_attack
    from ansm.attacks.builder import build_adversarial_dataset
    from ansm.data.datasets import ForgeryDataset, discover_datasets
    from ansm.data.synth import SyntheticForgeries
    from ansm.defense.ansm_net import count_parameters, load_ansm
    from ansm.defense.evaluate import AttackSpec, evaluate_defenses
    from ansm.defense.trainer import TrainANSMConfig, train_ansm
    from ansm.models.registry import load_localizer
    from ansm.models.train import TrainLocalizerConfig, train_localizer
    from ansm.utils import seed_everything, write_json_atomic

    def noop(_desc: str, _total: int) -> Callable[[int], None]:
        return lambda _n=1: None

    step = step or noop
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)

    # 1. localizer --------------------------------------------------------------------------------------------
    t = time.perf_counter()
    loc_dir = out / "localizer"
    if (loc_dir / "localizer.json").is_file():
        localizer = load_localizer(loc_dir / "localizer")
    else:
        lcfg = TrainLocalizerConfig(out=str(loc_dir), seed=cfg.seed, size=cfg.size, steps=cfg.loc_steps,
                                    arch_kwargs=dict(DEFENDED_LOCALIZER_KWARGS), batch_size=cfg.loc_batch,
                                    pool=cfg.loc_pool, warmup=20, eval_n=0, ckpt_every=50, noise_std=cfg.loc_noise_std)
        render, train = step("rendering localizer data", lcfg.pool), step("training localizer", lcfg.steps)
        localizer, _ = train_localizer(lcfg, on_step=lambda s, _l: train(1), on_pool_item=lambda: render(1))
    # channels-last weights: same values, ~1.3x faster attacks, ANSM training and evaluation on a CPU
    localizer = localizer.eval().to(memory_format=torch.channels_last)
    loc_path = str(loc_dir / "localizer")
    timings["localizer_s"] = time.perf_counter() - t
    log(f"localizer ready ({timings['localizer_s']:.0f} s): {loc_path}")

    # 2. anti-forensics sets (PGD and FGSM 8/255 on training images, the pool ANSM trains on) -------------------
    t = time.perf_counter()
    train_items = SyntheticForgeries(cfg.attack_n, seed=cfg.seed, split="train", size=cfg.size)
    attack_sets: list[dict[str, Any]] = []
    for name, params in (("pgd", _pgd()), ("fgsm", {"eps": 8 / 255})):
        adv_dir = out / f"attack-{name}"
        advance = step(f"building attack set ({name.upper()})", cfg.attack_n)
        built = build_adversarial_dataset(train_items, localizer, create_attack(name, localizer, **params), adv_dir,
                                          seed=cfg.seed, describe={"data": f"synthetic-train:{cfg.attack_n}",
                                                                   "model": loc_path, "size": cfg.size},
                                          on_item=lambda _i, _d: advance(1), batch_size=16)
        attack_sets.append({"path": str(adv_dir), "n_images": built.n_images})
    adv_dirs = [a["path"] for a in attack_sets]
    timings["attack_set_s"] = time.perf_counter() - t
    log(f"attack sets ready ({timings['attack_set_s']:.0f} s): {', '.join(adv_dirs)}")

    # 3. ANSM: full two-stage run, and the stage-2-only ablation -----------------------------------------------
    common = dict(localizer=loc_path, seed=cfg.seed, batch_size=cfg.ansm_batch, crop=None, eps_d=cfg.eps_d,
                  pool=cfg.attack_n, size=cfg.size, adv_data=adv_dirs, adv_fraction=1.0, mgr_pixel=cfg.mgr_pixel,
                  device=cfg.device)
    runs = {"full": TrainANSMConfig(out=str(out / "ansm"), stage1_steps=cfg.stage1_steps, stage2_steps=cfg.stage2_steps,
                                    ffa_weight=cfg.align_ffa, ffa_pixel=cfg.align_pixel, stage2_lr=cfg.stage2_lr,
                                    **common),
            # stage 2 alone starts from the identity, so it gets the full learning rate rather than the fine-tuning one
            "stage2_only": TrainANSMConfig(out=str(out / "ansm-stage2only"), stage1_steps=0,
                                           stage2_steps=cfg.ablation_stage2_steps, **common)}
    defenses: dict[str, torch.nn.Module] = {}
    for name, tcfg in runs.items():
        t = time.perf_counter()
        if (Path(tcfg.out) / "ansm.json").is_file():
            defenses[name], _ = load_ansm(Path(tcfg.out) / "ansm")
        else:
            advance = step(f"training ANSM ({name.replace('_', ' ')})", tcfg.total_steps)
            defenses[name], _ = train_ansm(tcfg, localizer, on_step=lambda s, st, l: advance(1))
        timings[f"ansm_{name}_s"] = time.perf_counter() - t
        log(f"ANSM ({name.replace('_', ' ')}) ready ({timings[f'ansm_{name}_s']:.0f} s): {tcfg.out}/ansm")
    defenses["stage1_only"], _ = load_ansm(out / "ansm" / "ansm_stage1")
    ansm = defenses["full"]

    # 4. held-out synthetic evaluation -----------------------------------------------------------------------
    t = time.perf_counter()
    test = SyntheticForgeries(cfg.test_n, seed=0, split="test", size=cfg.size)
    attacks = [AttackSpec("pgd", "pgd", _pgd()), AttackSpec("fgsm", "fgsm", {"eps": 8 / 255}),
               AttackSpec("pgd-hide", "pgd", {**_pgd(), "objective": "hide"})]
    advance = step("evaluating (held-out synthetic)", cfg.test_n)
    synth = evaluate_defenses(localizer, test, attacks, defenses, device=cfg.device, seed=cfg.seed,
                              on_item=advance, keep=cfg.examples)
    adaptive_set = SyntheticForgeries(cfg.adaptive_n, seed=0, split="test", size=cfg.size)
    advance = step("evaluating adaptive PGD (through ANSM)", cfg.adaptive_n)
    adaptive = evaluate_defenses(localizer, adaptive_set, [AttackSpec("pgd-adaptive", "pgd", _pgd(), adaptive="full")],
                                 {"full": ansm}, device=cfg.device, seed=cfg.seed, on_item=advance)
    timings["eval_synthetic_s"] = time.perf_counter() - t
    log(f"held-out evaluation done ({timings['eval_synthetic_s']:.0f} s)")

    # 5. real images -------------------------------------------------------------------------------------------
    t = time.perf_counter()
    shared_root = _shared_root(cfg.shared)
    shared: dict[str, Any] = {}
    if shared_root is None:
        shared_note = "skipped: no ../shared/data (or $ANSM_SHARED/data) next to the repository"
    else:
        shared_note = (f"{shared_root}: first {cfg.shared_per_dataset} forged images of each dataset, longer side "
                       f"downscaled to {cfg.shared_max_side}, PGD L-inf 8/255 10 steps on the bare localizer")
        for dname, ds in discover_datasets(shared_root, max_side=cfg.shared_max_side).items():
            recs = [r for r in ds.records if r.mask is not None][: cfg.shared_per_dataset]
            if not recs:
                continue
            subset = ForgeryDataset(ds.path, max_side=cfg.shared_max_side, records=recs, resize_masks=True)
            advance = step(f"evaluating {dname} (real)", len(recs))
            res = evaluate_defenses(localizer, subset, [AttackSpec("pgd", "pgd", _pgd())], {"full": ansm},
                                    batch_size=1, device=cfg.device, seed=cfg.seed, on_item=advance)
            shared[dname] = _flat(res["attacks"]["pgd"]) | {"n_images": res["n_images"]}
    timings["eval_shared_s"] = time.perf_counter() - t

    # 6. report ------------------------------------------------------------------------------------------------
    report: dict[str, Any] = {"attacks": {}, "heldout": {"n_images": synth["n_images"], "n_forged": synth["n_forged"],
                                                         "size": cfg.size, "split": "test", "metric": "F1@0.5, mean over forged images"}}
    for name, entry in {**synth["attacks"], **adaptive["attacks"]}.items():
        row = _flat(entry)
        row["ablation"] = {d: entry["defenses"][d] for d in ("stage1_only", "stage2_only") if d in entry["defenses"]}
        row["n_images"] = synth["n_images"] if name in synth["attacks"] else adaptive["n_images"]
        report["attacks"][name] = row
    report["shared"] = {"note": shared_note, "datasets": shared}
    report["cost"] = {"ansm_params": count_parameters(ansm), "localizer_params": count_parameters(localizer)}
    report["attack_sets"] = attack_sets
    report["config"] = asdict(cfg)
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    report["runtime_s"] = round(time.perf_counter() - t_start, 1)
    figure = out / "figure.png"
    _figure(synth["examples"], figure)
    report["figure"] = str(figure)
    write_json_atomic(out / "report.json", report)
    from ansm.utils import write_text_atomic

    write_text_atomic(out / "report.md", _markdown(report))
    log(f"wrote {out / 'report.md'}, {out / 'report.json'}, {figure}")
    return report


def _flat(entry: dict[str, Any]) -> dict[str, Any]:
    full = entry["defenses"]["full"]
    return {"f1_clean": entry["f1_clean"], "f1_adv": entry["f1_adv"], "f1_def": full["f1_def"],
            "f1_clean_def": full["f1_clean_def"], "recovery": full["recovery"], "attack": entry["attack"],
            "params": entry["params"], "adaptive_to": entry["adaptive_to"]}


def _fmt(v: Any) -> str:
    return "n/a" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def _markdown(r: dict[str, Any]) -> str:
    h = r["heldout"]
    lines = ["# ANSM demo report", "",
             f"Held-out synthetic test split: {h['n_images']} images ({h['n_forged']} forged), {h['size']}x{h['size']}; "
             f"{h['metric']}. Attacks target the bare localizer (paper setting) unless marked adaptive (they then "
             "attack localizer∘ANSM end to end). recovery = (f1_def - f1_adv) / (f1_clean - f1_adv).", "",
             "| attack | f1_clean | f1_adv | f1_def | f1_clean_def | recovery | stage-1-only f1_def (rec.) | stage-2-only f1_def (rec.) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, a in r["attacks"].items():
        abl = [f"{_fmt(a['ablation'][k]['f1_def'])} ({_fmt(a['ablation'][k]['recovery'])})" if k in a["ablation"] else "n/a"
               for k in ("stage1_only", "stage2_only")]
        label = f"{name} (adaptive, {a['n_images']} images)" if a.get("adaptive_to") else name
        lines.append(f"| {label} | {_fmt(a['f1_clean'])} | {_fmt(a['f1_adv'])} | {_fmt(a['f1_def'])} | "
                     f"{_fmt(a['f1_clean_def'])} | {_fmt(a['recovery'])} | {abl[0]} | {abl[1]} |")
    c = r["config"]
    lines += ["", f"Ablation: stage-1-only = the checkpoint after stage 1 ({c['stage1_steps']} alignment steps: pixel "
              f"weight {c['align_pixel']:g}, FFA weight {c['align_ffa']:g}); stage-2-only = stage 2 (MgR, pixel weight "
              f"{c['mgr_pixel']:g}) alone from the identity, {c['ablation_stage2_steps']} steps at the full lr (the full run's "
              f"stage 2 has {c['stage2_steps']}). The "
              "`f1_clean_def` of the ablations is in report.json.", "",
              "## Real images (numbers as they are)", "", r["shared"]["note"], ""]
    if r["shared"]["datasets"]:
        lines += ["| dataset | images | f1_clean | f1_adv (PGD) | f1_def | f1_clean_def | recovery |", "|---|---|---|---|---|---|---|"]
        for name, a in r["shared"]["datasets"].items():
            lines.append(f"| {name} | {a['n_images']} | {_fmt(a['f1_clean'])} | {_fmt(a['f1_adv'])} | {_fmt(a['f1_def'])} | "
                         f"{_fmt(a['f1_clean_def'])} | {_fmt(a['recovery'])} |")
    c = r["cost"]
    lines += ["", f"ANSM: {c['ansm_params']:,} parameters; localizer: {c['localizer_params']:,} "
              "(MACs at 512x512: `python bench/defense_cost.py`).", "",
              f"Runtime: {r['runtime_s']:.0f} s (" + ", ".join(f"{k[:-2]} {v:.0f} s" for k, v in r["timings_s"].items()) + ").",
              "", "![examples](figure.png)", ""]
    return "\n".join(lines)


def _figure(examples: list[dict[str, Any]], path: Path) -> None:
    """image | ground truth | clean prediction | PGD prediction | defended prediction, one row per example."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ansm.utils import atomic_path

    cols = ["image", "ground truth", "clean prediction", "attacked (PGD)", "defended (ANSM)"]
    n = max(1, len(examples))
    fig, axes = plt.subplots(n, len(cols), figsize=(2.0 * len(cols), 2.0 * n), squeeze=False)
    for r, ex in enumerate(examples):
        panels = [ex["image"], ex["mask"], ex["clean"], ex["attacks"]["pgd"]["none"], ex["attacks"]["pgd"]["full"]]
        for c, p in enumerate(panels):
            ax = axes[r][c]
            if p.shape[0] == 3:
                ax.imshow(p.permute(1, 2, 0).numpy(), interpolation="nearest")
            else:
                ax.imshow(p[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

"""The whole pipeline in one call (what ``ansm demo`` and ``make demo`` run), sized for 2 CPU cores in minutes.

1. synthesize training forgeries and train the built-in localizer;
2. build two anti-forensics sets (PGD and FGSM on training images, ``ansm attack``'s builder);
3. train ANSM from them: by default stage 2 (MgR with a pixel term) alone, the recipe chosen on ``val``
   (``experiments/demo_val.py`` compares it with the paper's two stages at equal budgets); with ``stage1_steps``
   set, stage 1 alignment (pixel term, FFA weight ``align_ffa``) comes first and its checkpoint is reported as
   the stage-1-only ablation;
4. evaluate on held-out synthetic images (``eval_split``: ``test`` by default, photos and scenes never used in
   training or in any choice, which were all made on ``val``) against the two attacks ANSM was trained on (PGD and
   FGSM at 8/255), attacks it never saw (PGD at 4/255 and 12/255, PGD-L2, MI-FGSM, SegPGD, C&W-L2, the hide
   objective), and a PGD that attacks through ANSM (adaptive, the honest number), each with a bootstrap 95%
   interval over images and the false-positive rate on authentic images;
5. apply the same ANSM to ``../shared/data`` attacked with PGD when it is present;
6. write ``report.md``, ``report.json`` and ``figure.png`` in the output folder.

Every stage is resumable (each writes its own checkpoints), so an interrupted demo started again picks up
where it stopped; the evaluation is always recomputed (it is seeded, so it gives the same numbers).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ansm.defense.evaluate import RECOVERY_MIN_GAP
from ansm.errors import ConfigError
from ansm.eval.stats import format_ci
from ansm.utils import shared_locations


@dataclass
class DemoConfig:
    out: str = "runs/demo"
    seed: int = 0
    # ANSM's own seed (initialisation, batches); None: ``seed``. Varying it alone retrains ANSM against the same
    # localizer and attack sets and scores it on the same images: the spread over training seeds of one recipe
    ansm_seed: int | None = None
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
    # The recipe, chosen on val (experiments/demo_val.py, table in docs/ansm.md): stage 2 alone (MgR with the pixel
    # term, from the identity, at the full lr) for 1100 steps, the wall time of the earlier 2400 pixel-alignment +
    # 400 MgR steps. Rule: highest recovery averaged over every oblivious attack (seen and unseen) among recipes
    # that keep clean F1 within 0.03 of the bare localizer and fit the demo's time; the two-stage pixel recipe
    # undid its two training attacks best but not the unseen ones (PGD-4/255, PGD-L2, C&W: recovery <= 0.1), the
    # paper's FFA-then-MgR had the best mean but cost 0.05 clean F1 and 1.4x the time. Stage 1 stays available
    # (stage1_steps, align_ffa, align_pixel).
    stage1_steps: int = 0
    stage2_steps: int = 1100
    align_ffa: float = 0.0
    align_pixel: float = 1 / 8  # L1 in units of 8/255 (the attack budget)
    mgr_pixel: float = 1 / 8
    stage2_lr: float | None = None  # None: the stage-1 peak lr (stage 2 then starts from the identity at full lr)
    ansm_batch: int = 16
    eps_d: float = 16 / 255
    # ANSM architecture (ansm.defense.ansm_net.ARCHS): "fast" runs the body at half resolution, ~1/4 of the CPU
    # time of "full" at 512x512 (bench/ansm_latency.py); which one the demo uses is decided on val
    ansm_arch: str = "full"
    ansm_width: int = 16  # ANSM's hidden channels (experiments/demo_val.py compares cheaper ANSMs on val)
    ansm_dilations: tuple[int, ...] = (1, 2, 4)  # one residual block per entry (ansm.defense.ANSM)
    # distil ANSM from a trained one (TrainANSMConfig.teacher / distill): a checkpoint path and the L1 weight
    ansm_teacher: str | None = None
    ansm_distill: float = 0.0
    eval_split: str = "test"  # "val" for every choice (experiments/demo_val.py), "test" reported once
    test_n: int = 96  # held-out synthetic images of eval_split
    adaptive_n: int = 32  # of those, attacked adaptively (through ANSM)
    shared: str | None = "auto"  # folder with real datasets; "auto": $ANSM_SHARED/data or ../shared/data
    shared_per_dataset: int = 8  # forged images per real dataset
    shared_max_side: int = 256
    examples: int = 6
    device: str = "cpu"

    def __post_init__(self) -> None:
        for name in ("size", "loc_steps", "loc_pool", "attack_n", "test_n", "adaptive_n", "examples"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        from ansm.defense.ansm_net import ARCHS

        if self.ansm_arch not in ARCHS:
            raise ConfigError(f"ansm_arch must be one of {', '.join(ARCHS)}, got {self.ansm_arch!r}")
        if self.eval_split not in ("val", "test"):
            raise ConfigError(f"eval_split must be val or test, got {self.eval_split!r}")
        from ansm.validate import check_fields

        check_fields(self, None, non_negative=("align_ffa", "align_pixel", "mgr_pixel"), positive=("stage2_lr",),
                     non_negative_int=("stage1_steps", "stage2_steps", "shared_per_dataset", "ansm_seed"),
                     positive_int=("loc_batch", "ansm_batch", "ansm_width", "shared_max_side"))


Step = Callable[[str, int], Callable[[int], None]]  # (description, total) -> advance(n)

# The localizer the demo (and the benchmark) defends: twostream *without* its JPEG-grid stream. That stream reads
# 8x8 quantisation traces, which any noise (the attack's, or ANSM's own perturbation) wipes out and no input-side
# defense can restore; its periodic features also give ANSM's training gradients that swamp the rest (measured:
# ANSM then collapses to a uniform +-eps_d shift, PGD recovery 0.04 vs 0.47 without the stream; docs/ansm.md).
DEFENDED_LOCALIZER_KWARGS: dict[str, Any] = {"jpeg_grid": False}


def _shared_root(spec: str | None) -> tuple[Path, str] | None:
    """The real-data folder and the name the report gives it: as the user wrote it (``../shared/data``), never
    the absolute path of the machine that ran the demo."""
    if spec is None or spec == "none":
        return None
    if spec == "auto":
        return next(((path, name) for path, name in shared_locations("data") if path.is_dir()), None)
    p = Path(spec)
    if not p.is_dir():
        raise ConfigError(f"--shared {p}: no such folder")
    return p, spec


def demo_attacks() -> list[tuple[Any, bool]]:
    """The demo's attacks as ``(AttackSpec, seen in ANSM's training)``: the two ANSM trains on, then unseen ones
    (other budgets, norms, optimisers, losses and objectives), then the adaptive PGD through ANSM."""
    from ansm.defense.evaluate import AttackSpec

    return [(AttackSpec("pgd", "pgd", _pgd()), True), (AttackSpec("fgsm", "fgsm", {"eps": 8 / 255}), True),
            (AttackSpec("pgd-4/255", "pgd", _pgd(4 / 255) | {"alpha": 1 / 255}), False),
            (AttackSpec("pgd-12/255", "pgd", _pgd(12 / 255) | {"alpha": 3 / 255}), False),
            (AttackSpec("pgd-l2", "pgd-l2", {"eps": 1.0, "alpha": 0.2, "steps": 10}), False),
            (AttackSpec("mifgsm", "mifgsm", {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10}), False),
            (AttackSpec("segpgd", "segpgd", _pgd()), False),
            (AttackSpec("cw-l2", "cw-l2", {"steps": 30}), False),
            (AttackSpec("pgd-hide", "pgd", {**_pgd(), "objective": "hide"}), False)]


def _pgd(eps: float = 8 / 255, steps: int = 10) -> dict[str, Any]:
    return {"eps": eps, "alpha": 2 / 255, "steps": steps}


def run_demo(cfg: DemoConfig, step: Step | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the pipeline (module docstring) and return the report dict also written to ``report.json``."""
    from ansm.attacks import create_attack
    from ansm.attacks.builder import build_adversarial_dataset
    from ansm.data.datasets import ForgeryDataset, discover_datasets
    from ansm.data.synth import SyntheticForgeries
    from ansm.defense.ansm_net import count_parameters, load_ansm
    from ansm.defense.evaluate import RECOVERY_MIN_IMAGES, AttackSpec, evaluate_defenses
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
                                                                   "model": "localizer/localizer", "size": cfg.size},
                                          on_item=lambda _i, _d: advance(1), batch_size=16)
        attack_sets.append({"path": str(adv_dir), "n_images": built.n_images})
    adv_dirs = [a["path"] for a in attack_sets]
    timings["attack_set_s"] = time.perf_counter() - t
    log(f"attack sets ready ({timings['attack_set_s']:.0f} s): {', '.join(adv_dirs)}")

    # 3. ANSM: the two-stage run (its stage-1 checkpoint is the stage-1-only ablation) -----------------------
    t = time.perf_counter()
    tcfg = TrainANSMConfig(out=str(out / "ansm"), localizer=loc_path,
                           seed=cfg.seed if cfg.ansm_seed is None else cfg.ansm_seed,
                           pool_seed=None if cfg.ansm_seed is None else cfg.seed,
                           batch_size=cfg.ansm_batch,
                           crop=None, eps_d=cfg.eps_d, pool=cfg.attack_n, size=cfg.size, adv_data=adv_dirs,
                           adv_fraction=1.0, stage1_steps=cfg.stage1_steps, stage2_steps=cfg.stage2_steps,
                           ffa_weight=cfg.align_ffa, ffa_pixel=cfg.align_pixel, mgr_pixel=cfg.mgr_pixel,
                           stage2_lr=cfg.stage2_lr, arch=cfg.ansm_arch, width=cfg.ansm_width,
                           dilations=list(cfg.ansm_dilations),
                           teacher=cfg.ansm_teacher, distill=cfg.ansm_distill,
                           device=cfg.device)
    if (out / "ansm" / "ansm.json").is_file():
        ansm, _ = load_ansm(out / "ansm" / "ansm")
    else:
        advance = step("training ANSM", tcfg.total_steps)
        ansm, _ = train_ansm(tcfg, localizer, on_step=lambda s, st, l: advance(1))
    defenses: dict[str, torch.nn.Module] = {"full": ansm}
    if cfg.stage1_steps and cfg.stage2_steps:  # the stage-1 checkpoint is an ablation only when a stage 2 follows
        defenses["stage1_only"] = load_ansm(out / "ansm" / "ansm_stage1")[0]
    timings["ansm_s"] = time.perf_counter() - t
    log(f"ANSM ready ({timings['ansm_s']:.0f} s): {tcfg.out}/ansm")

    # 4. held-out synthetic evaluation -----------------------------------------------------------------------
    t = time.perf_counter()
    test = SyntheticForgeries(cfg.test_n, seed=0, split=cfg.eval_split, size=cfg.size)
    specs = demo_attacks()
    seen = {spec.name: trained for spec, trained in specs}
    advance = step(f"evaluating ({cfg.eval_split} split, {len(specs)} attacks)", cfg.test_n)
    synth = evaluate_defenses(localizer, test, [spec for spec, _ in specs], defenses, device=cfg.device,
                              seed=cfg.seed, on_item=advance, keep=cfg.examples)
    adaptive_set = SyntheticForgeries(cfg.adaptive_n, seed=0, split=cfg.eval_split, size=cfg.size)
    advance = step("evaluating adaptive PGD (through ANSM)", cfg.adaptive_n)
    # the same PGD on the bare localizer is the adaptive row's recovery reference, on the same images
    adaptive = evaluate_defenses(localizer, adaptive_set, [AttackSpec("pgd", "pgd", _pgd()),
                                                           AttackSpec("pgd-adaptive", "pgd", _pgd(), adaptive="full",
                                                                      reference="pgd")],
                                 {"full": ansm}, device=cfg.device, seed=cfg.seed, on_item=advance)
    timings["eval_synthetic_s"] = time.perf_counter() - t
    log(f"held-out evaluation done ({timings['eval_synthetic_s']:.0f} s)")

    # 5. real images -------------------------------------------------------------------------------------------
    t = time.perf_counter()
    found = _shared_root(cfg.shared)
    shared: dict[str, Any] = {}
    if found is None:
        shared_note = "skipped: no ../shared/data (or $ANSM_SHARED/data) next to the repository"
    else:
        shared_root, shared_name = found
        shared_note = (f"`{shared_name}`: first {cfg.shared_per_dataset} forged images of each dataset, longer side "
                       f"downscaled to {cfg.shared_max_side}, PGD L-inf 8/255 10 steps on the bare localizer; recovery "
                       f"is not given for fewer than {RECOVERY_MIN_IMAGES} images")
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
                                                         "n_authentic": synth["n_images"] - synth["n_forged"],
                                                         "size": cfg.size, "split": cfg.eval_split,
                                                         "metric": "F1@0.5, mean over forged images"}}
    for name, entry in synth["attacks"].items():
        row = _flat(entry)
        row["seen_in_training"] = seen[name]
        row["ablation"] = {k: v for k, v in entry["defenses"].items() if k == "stage1_only"}
        row["n_images"], row["n_forged"] = synth["n_images"], synth["n_forged"]
        report["attacks"][name] = row
    row = _flat(adaptive["attacks"]["pgd-adaptive"])
    row.update(seen_in_training=False, ablation={}, n_images=adaptive["n_images"], n_forged=adaptive["n_forged"])
    report["attacks"]["pgd-adaptive"] = row
    report["shared"] = {"note": shared_note, "datasets": shared}
    report["cost"] = {"ansm_params": count_parameters(ansm), "localizer_params": count_parameters(localizer)}
    report["attack_sets"] = attack_sets
    report["config"] = asdict(cfg)
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    report["runtime_s"] = round(time.perf_counter() - t_start, 1)
    figure = out / "figure.png"
    _figure(synth["examples"], figure)
    report["figure"] = figure.name
    write_json_atomic(out / "report.json", report)
    from ansm.utils import write_text_atomic

    write_text_atomic(out / "report.md", _markdown(report))
    log(f"wrote {out / 'report.md'}, {out / 'report.json'}, {figure}")
    return report


def _flat(entry: dict[str, Any]) -> dict[str, Any]:
    full = entry["defenses"]["full"]
    return {"f1_clean": entry["f1_clean"], "f1_adv": entry["f1_adv"], "f1_def": full["f1_def"],
            "f1_def_ci": full["f1_def_ci"], "f1_clean_def": full["f1_clean_def"], "recovery": full["recovery"],
            "f1_ref": entry["f1_ref"], "fp_clean": entry["fp_clean"], "fp_adv": entry["fp_adv"],
            "fp_def": full["fp_def"], "fp_clean_def": full["fp_clean_def"], "attack": entry["attack"],
            "params": entry["params"], "adaptive_to": entry["adaptive_to"]}


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def markdown_table(r: dict[str, Any]) -> str:
    """The held-out table (also the README's demo section): one row per attack, seen ones first. The stage-1-only
    column appears only when the run had a stage 1 to report."""
    ablation = any(a["ablation"].get("stage1_only") for a in r["attacks"].values())
    head = ["attack", "seen in training", "f1_clean", "f1_adv", "f1_def [95% CI]", "f1_clean_def", "recovery",
            *(["stage-1-only f1_def"] if ablation else []), "authentic FP: attacked / defended"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, a in r["attacks"].items():
        s1 = a["ablation"].get("stage1_only")
        label = f"{name} (through ANSM, {a['n_images']} images)" if a.get("adaptive_to") else name
        adv = "n/a (crafted through ANSM)" if a.get("adaptive_to") else _fmt(a["f1_adv"])
        cells = [label, "yes" if a["seen_in_training"] else "no", _fmt(a["f1_clean"]), adv,
                 format_ci(a["f1_def"], a["f1_def_ci"]), _fmt(a["f1_clean_def"]), _fmt(a["recovery"]),
                 *([_fmt(s1["f1_def"]) if s1 else "n/a"] if ablation else []), f"{_fmt(a['fp_adv'])} / {_fmt(a['fp_def'])}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _recipe_text(c: dict[str, Any]) -> str:
    """One sentence on how this run's ANSM was trained, from its config."""
    text = (f"ANSM (offline attack sets): trained only on PGD-10 and FGSM at 8/255 ({c['attack_n']} training images "
            "each); ")
    if c["stage1_steps"]:
        text += (f"stage 1 {c['stage1_steps']} alignment steps (pixel weight {c['align_pixel']:g}, FFA weight "
                 f"{c['align_ffa']:g}), then ")
    from ansm.defense.trainer import TrainANSMConfig

    lr = format(TrainANSMConfig().lr if c["stage2_lr"] is None else c["stage2_lr"], "g")
    text += (f"stage 2 {c['stage2_steps']} MgR steps (pixel weight {c['mgr_pixel']:g}, peak lr {lr}"
             f"{', from the identity' if not c['stage1_steps'] else ''}). ")
    if c["stage1_steps"] and c["stage2_steps"]:
        text += (f"Stage-1-only = the checkpoint after stage 1 ({c['stage1_steps']} of "
                 f"{c['stage1_steps'] + c['stage2_steps']} steps, so not an equal-budget ablation). ")
    return text + ("The recipe was chosen on `val` against the paper's FFA-then-MgR and other variants at equal budgets "
                   "(`python experiments/demo_val.py`, docs/ansm.md).")


def _markdown(r: dict[str, Any]) -> str:
    h, c = r["heldout"], r["config"]
    lines = ["# ANSM demo report", "",
             f"Held-out synthetic `{h['split']}` split (photos and scenes never used in training or in any choice): "
             f"{h['n_images']} images ({h['n_forged']} forged, {h['n_authentic']} authentic), {h['size']}x{h['size']}; "
             f"{h['metric']}, with a bootstrap 95% interval over the forged images. Attacks target the bare localizer "
             "(the paper's setting) except the adaptive one, which attacks localizer∘ANSM end to end. recovery = "
             "(f1_def - f1_ref) / (f1_clean - f1_ref), f1_ref the bare localizer under the same attack (for the "
             f"adaptive row: PGD on the bare localizer, same images); not given when the attack took under "
             f"{RECOVERY_MIN_GAP} F1 away. Authentic FP: share of pixels flagged on authentic images (clean: "
             f"{_fmt(next(iter(r['attacks'].values()))['fp_clean'])}).", "", markdown_table(r), "",
             _recipe_text(c), "",
             "## Real images (numbers as they are)", "", r["shared"]["note"], ""]
    if r["shared"]["datasets"]:
        lines += ["| dataset | images | f1_clean | f1_adv (PGD) | f1_def | f1_clean_def | recovery |", "|---|---|---|---|---|---|---|"]
        for name, a in r["shared"]["datasets"].items():
            lines.append(f"| {name} | {a['n_images']} | {_fmt(a['f1_clean'])} | {_fmt(a['f1_adv'])} | "
                         f"{format_ci(a['f1_def'], a['f1_def_ci'])} | {_fmt(a['f1_clean_def'])} | {_fmt(a['recovery'])} |")
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

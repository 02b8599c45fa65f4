"""The real-forgery benchmark (``ansm benchmark --preset real``): a localizer trained on CASIA v1 ``train``, ANSM
trained against it, both reported on CASIA v1 ``test`` and the real protocol. ``train`` trains, ``val`` chooses,
``test`` is read once, at the end.

Stages, each resumable under ``out`` (every finished stage is a file; a killed run starts at the first missing one):

1. ``localizer``: ``ansm train-localizer --data <real>/casia1`` (mobilenet-unet: ImageNet MobileNetV2 encoder from
   the official TFLite file, SRM/Bayar noise stream, U-Net decoder; augmented 256-px crops; val F1@0.5 every
   ``loc_val_every`` steps picks the checkpoint) into ``out/localizer/train``, unless ``localizer`` names one;
2. ``protocol``: ``ansm evaluate --protocol real`` (CASIA v1 test and six other datasets at native resolution)
   and PGD-10 at 8/255 on the bare localizer over the forged CASIA v1 test images;
3. ``attack-sets``: ``ansm attack --split train`` with PGD-10 and FGSM at 8/255 on the train split (``--shard
   attack_shard``: every n-th image, forged and authentic), the anti-forensics set ANSM trains from;
4. ``val``: ANSM trained with each of RECIPES (seed 0, equal steps, batch, data and online attacks), scored on
   the forged ``val`` images under the two training attacks (crafted on the bare localizer, then defended);
   the winner by RULE goes to ``ansm/val.json``;
5. ``seeds``: the winner with the other seeds;
6. ``test``: every seed on the forged CASIA v1 ``test`` images under the trained attacks and seven unseen ones
   (:func:`ansm.demo.demo_attacks`), all seeds scored on the same adversarial images; then, on the first
   ``adaptive_n`` of them, PGD-10 through each seed's ANSM, scored on that seed (white-box) and on the next seed
   (gray-box: the attacker knows the recipe, not the weights);
7. ``informed`` (only with ``--until informed``: it trains six more models and attacks each): the plain ANSM,
   the robust ANSM and PGD adversarial fine-tuning side by side at equal budgets under oblivious, gray-box and
   white-box attacks with restarts at several budgets (:mod:`ansm.benchmark.real_informed`).

Results: ``out/report.md`` (the tables ``scripts/update_readme.py real`` copies into the README).
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from ansm.errors import AnsmError, ConfigError
from ansm.utils import write_json_atomic
from ansm.validate import check_fields

STAGES = ("localizer", "protocol", "attack-sets", "val", "seeds", "test", "informed")
RECIPES: dict[str, dict[str, float]] = {  # the three stage-1/stage-2 recipes compared on val
    "FFA, then MgR (paper)": {"ffa_weight": 1, "ffa_pixel": 0, "mgr_pixel": 0},
    "pixel, then MgR + pixel": {"ffa_weight": 0, "ffa_pixel": 0.125, "mgr_pixel": 0.125},
    "FFA + pixel, then MgR + pixel": {"ffa_weight": 1, "ffa_pixel": 0.125, "mgr_pixel": 0.125},
}
CLEAN_TOL = 0.02
RULE = ("highest recovery averaged over the two training attacks (PGD-10, FGSM at 8/255) among the recipes whose "
        f"clean+ANSM F1 is within {CLEAN_TOL} of the bare localizer's; if none is, the one that loses the least "
        "clean F1")
PGD = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 10}


@dataclass
class RealConfig:
    preset: str = "real"
    out: str = "runs/benchmark-real"
    real: str | None = None  # root of the real datasets (None: $ANSM_SHARED/real or ../shared/real)
    localizer: str | None = None  # a checkpoint to protect instead of training one (stage 1 skipped)
    device: str = "auto"
    # the localizer recipe: 2000 steps because a 1000-step run's val F1 was still rising at its end
    loc_steps: int = 2000
    loc_val_every: int = 250
    loc_batch: int = 8
    loc_lr: float = 1e-3
    crop: int = 256
    attack_shard: str | None = "0/4"  # None: attack the whole train split
    # FFA taps of mobilenet-unet whose maps are >= 32x32 at the 256-px crop (strides 8, 8, 4); its default
    # "context" tap is 16x16 there
    taps: str = "encoder.blocks.5,up8,up4"
    stage1_steps: int = 125
    stage2_steps: int = 125
    ansm_batch: int = 4
    adv_fraction: float = 0.5
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    adaptive_n: int = 32
    eval_batch: int = 8
    # stage 7 (informed): adversarial fine-tuning's budget, and the white-box attack's size on the first
    # informed_n forged test images. One gradient step through mobilenet-unet on a 384x256 CASIA image took ~0.35 s
    # on one CPU core; each image costs ~350 steps per defense (3 budgets x 2 objectives x 50, the checks, the
    # oblivious and gray-box PGD-10) and there are 10 defenses (bare + 3 kinds x 3 seeds), so the CPU preset
    # attacks 8 images with PGD-50, ~20 min each on one core (the GPU preset: all 164, PGD-100 x 2 restarts).
    advft_eps: float = 8 / 255
    informed_n: int = 8
    informed_steps: int = 50
    informed_restarts: int = 1
    informed_eps: list[float] = field(default_factory=lambda: [2 / 255, 4 / 255, 8 / 255])

    def __post_init__(self) -> None:
        if len(self.seeds) < 2 or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds: give at least two distinct seeds (gray-box needs another seed), got {self.seeds}")
        from ansm.benchmark.config import budget, budgets

        self.advft_eps = budget("advft_eps", self.advft_eps)
        self.informed_eps = budgets("informed_eps", self.informed_eps)
        if not all(e > 0 for e in (self.advft_eps, *self.informed_eps)):
            raise ConfigError("advft_eps and informed_eps need budgets above 0, e.g. 8/255; got "
                              f"{self.advft_eps:g} and {', '.join(f'{e:g}' for e in self.informed_eps)}")
        check_fields(self, "--set {name}", positive=("loc_lr",), fraction=("adv_fraction",),
                     non_negative_int=("stage1_steps", "stage2_steps"),
                     positive_int=("loc_steps", "loc_val_every", "loc_batch", "crop", "ansm_batch", "adaptive_n",
                                   "eval_batch", "informed_n", "informed_steps", "informed_restarts"))


class StageError(AnsmError):
    """A stage's own ``ansm`` command failed: it has printed why; the benchmark stops with one line, no traceback."""


REAL_PRESETS: dict[str, dict[str, Any]] = {
    # 2 CPU cores: ~70 min localizer, ~15 min protocol, ~15 min attack sets, ~35 min val, ~25 min seeds, ~60 min test
    "real": {},
    # One GPU, the paper's scale: the whole train split attacked, 10x the ANSM steps at 4x the batch, every
    # forged test image attacked adaptively
    "real-gpu": {"out": "runs/benchmark-real-gpu", "device": "cuda", "loc_steps": 8000, "loc_val_every": 500,
                 "loc_batch": 32, "attack_shard": None, "stage1_steps": 1000, "stage2_steps": 2000,
                 "ansm_batch": 16, "adaptive_n": 164, "eval_batch": 16, "informed_n": 164, "informed_steps": 100,
                 "informed_restarts": 2},
}


def real_config(name: str, **overrides: Any) -> RealConfig:
    known = {f.name for f in fields(RealConfig)}
    bad = sorted(set(overrides) - known)
    if bad:
        raise ConfigError(f"unknown setting(s) for preset {name}: {', '.join(bad)}")
    return RealConfig(**{"preset": name, **REAL_PRESETS[name], **overrides})


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cli(*args: str) -> None:
    """One stage through the CLI, as a user would run it (each command resumes its own finished work)."""
    cmd = [sys.executable, "-c", "import sys; from ansm.cli import main; sys.argv[0] = 'ansm'; main()", *args]
    if (rc := subprocess.run(cmd).returncode) != 0:  # the stage printed its own one-line reason above
        raise StageError(f"stage `ansm {args[0]}` failed (exit code {rc}); its message is above, and the finished "
                         "stages are kept: fix it and run the same command again to resume")


def _forged(casia: Path, split: str, first: int | None = None):
    from ansm.data.datasets import ForgeryDataset, open_dataset

    full = open_dataset(casia, split=split)
    records = [r for r in full.records if r.mask is not None]
    return ForgeryDataset(full.path, records=records[:first] if first else records)


def _score(localizer_path: Path, dataset: Any, attacks: list, defenses: dict[str, Path], label: str,
           cfg: RealConfig, result: Path) -> dict[str, Any]:
    """Score ``defenses`` and write ``result``; the finished batches are kept beside it (``.progress.json``), so
    a stage killed an hour into the test set resumes at the next batch."""
    from ansm.cli.app import progress
    from ansm.defense.ansm_net import load_ansm
    from ansm.defense.evaluate import evaluate_defenses
    from ansm.models.registry import load_localizer
    from ansm.utils import resolve_device

    device = resolve_device(cfg.device)
    localizer = load_localizer(localizer_path).to(device)
    models = {k: load_ansm(p)[0].to(device) for k, p in defenses.items()}
    partial = result.with_suffix(".progress.json")
    t0 = time.perf_counter()
    with progress() as bar:
        task = bar.add_task(label, total=len(dataset))
        res = evaluate_defenses(localizer, dataset, attacks, models, batch_size=cfg.eval_batch, device=device, seed=0,
                                on_item=lambda n: bar.advance(task, n), progress_file=partial,
                                on_resumed=lambda n: bar.update(task, advance=n, resumed=True))
    res.pop("examples", None)
    res["seconds"] = round(time.perf_counter() - t0, 1)  # (this process's share, after a resume)
    write_json_atomic(result, res)
    partial.unlink(missing_ok=True)
    return res


def pgd_on_test(localizer_path: Path, casia: Path, cfg: RealConfig) -> dict[str, Any]:
    """F1 of the bare localizer on the forged CASIA v1 test images, clean and under PGD-10 at 8/255."""
    import torch

    from ansm.attacks import create_attack
    from ansm.eval.evaluate import evaluate
    from ansm.models.registry import load_localizer
    from ansm.utils import resolve_device, seed_everything

    device = resolve_device(cfg.device)
    model = load_localizer(localizer_path).to(device)
    forged = _forged(casia, "test")
    seed_everything(0)
    t0 = time.perf_counter()
    clean = evaluate(model, forged, batch_size=cfg.eval_batch, device=device)
    atk = create_attack("pgd", model, **PGD)
    with torch.enable_grad():
        attacked = evaluate(model, forged, batch_size=cfg.eval_batch, device=device, transform=lambda x, m: atk(x, m))
    return {"clean": clean, "pgd": attacked, "params": {k: round(v * 255, 3) if k != "steps" else v
                                                        for k, v in PGD.items()},
            "seconds": round(time.perf_counter() - t0, 1)}


def choose(val: dict[str, Any]) -> tuple[str, dict[str, dict[str, Any]]]:
    """The winner by RULE, and each recipe's val numbers."""
    rows: dict[str, dict[str, Any]] = {}
    for recipe in RECIPES:
        d = {a: val["attacks"][a]["defenses"][recipe] for a in ("pgd", "fgsm")}
        known = [d[a]["recovery"] for a in d if d[a]["recovery"] is not None]  # None: too little F1 taken away
        rows[recipe] = {"recovery_pgd": d["pgd"]["recovery"], "recovery_fgsm": d["fgsm"]["recovery"],
                        "recovery_mean": statistics.mean(known) if known else None,
                        "f1_clean_def": d["pgd"]["f1_clean_def"], "f1_clean": val["clean"]["f1"]}
    loss = {r: rows[r]["f1_clean"] - rows[r]["f1_clean_def"] for r in RECIPES}
    ok = [r for r in RECIPES if loss[r] <= CLEAN_TOL]
    if ok:
        return max(ok, key=lambda r: -1e9 if rows[r]["recovery_mean"] is None else rows[r]["recovery_mean"]), rows
    return min(RECIPES, key=loss.__getitem__), rows


def _train_ansm(cfg: RealConfig, localizer: Path, casia: Path, adv: list[Path], recipe: str, seed: int,
                out: Path, extra: list[str] = ()) -> Path:
    if not (out / "ansm.safetensors").exists():
        r = RECIPES[recipe]
        cli("train", "--model", str(localizer), "--data", str(casia), "--split", "train", "--crop", str(cfg.crop),
            "--batch-size", str(cfg.ansm_batch), "--stage1-steps", str(cfg.stage1_steps), "--stage2-steps",
            str(cfg.stage2_steps), "--adv-fraction", str(cfg.adv_fraction), "--taps", cfg.taps,
            "--ffa-weight", str(r["ffa_weight"]), "--ffa-pixel", str(r["ffa_pixel"]), "--mgr-pixel", str(r["mgr_pixel"]),
            *[a for p in adv for a in ("--adv-data", str(p))], "--seed", str(seed), "--device", cfg.device,
            *extra, "--out", str(out))
    return out / "ansm"


def run_real(cfg: RealConfig, until: str = "test", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) the stages up to ``until``; return what is finished (and write ``out/report.md``)."""
    from ansm.defense.evaluate import AttackSpec
    from ansm.demo import demo_attacks
    from ansm.eval.protocols import default_real_root

    if until not in STAGES:
        raise ConfigError(f"--until must be one of {', '.join(STAGES)}, got {until!r}")
    last = STAGES.index(until)
    root = Path(cfg.real) if cfg.real else default_real_root()
    if root is None or not (root / "casia1").is_dir():
        raise ConfigError(f"{root or '../shared/real'}: no casia1 folder; pass --data DIR (the real datasets' root)")
    casia, out = root / "casia1", Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_resume(out, cfg)

    loc_dir = out / "localizer"
    localizer = Path(cfg.localizer) if cfg.localizer else loc_dir / "train" / "localizer"  # 1. localizer
    if not cfg.localizer and not (loc_dir / "train" / "summary.json").is_file():  # (finished: its summary is kept)
        cli("train-localizer", "--data", str(casia), "--arch", "mobilenet-unet", "--steps", str(cfg.loc_steps),
            "--val-every", str(cfg.loc_val_every), "--batch-size", str(cfg.loc_batch), "--lr", str(cfg.loc_lr),
            "--crop", str(cfg.crop), "--device", cfg.device, "--out", str(loc_dir / "train"))
    if last >= 1:  # 2. the real protocol and PGD on the bare localizer
        protocol_json, pgd_json = loc_dir / "protocol.json", loc_dir / "pgd.json"
        if not protocol_json.exists():
            cli("evaluate", "--model", str(localizer), "--protocol", "real", "--data", str(root), "--device",
                cfg.device, "--json", str(protocol_json))
        if not pgd_json.exists():
            log("PGD-10 at 8/255 on the bare localizer, forged CASIA v1 test images")
            write_json_atomic(pgd_json, pgd_on_test(localizer, casia, cfg))

    ansm_dir = out / "ansm"
    adv = [ansm_dir / "adv-pgd", ansm_dir / "adv-fgsm"]
    if last >= 2:  # 3. anti-forensics sets on the train split
        params = {"pgd": ["--attack", "pgd", "--eps", "8/255", "--alpha", "2/255", "--steps", "10"],
                  "fgsm": ["--attack", "fgsm", "--eps", "8/255"]}
        for folder, name in zip(adv, params):
            cli("attack", "--data", str(casia), "--split", "train", *(["--shard", cfg.attack_shard]
                                                                      if cfg.attack_shard else []),
                "--model", str(localizer), *params[name], "--batch-size", str(cfg.eval_batch), "--device",
                cfg.device, "--out", str(folder))
    if last >= 3:  # 4. recipes on val
        val_json = ansm_dir / "val.json"
        if not val_json.exists():
            runs = {r: _train_ansm(cfg, localizer, casia, adv, r, cfg.seeds[0], ansm_dir / "val" / slug(r))
                    for r in RECIPES}
            specs = [AttackSpec("pgd", "pgd", PGD), AttackSpec("fgsm", "fgsm", {"eps": 8 / 255})]
            res = _score(localizer, _forged(casia, "val"), specs, runs, "val: recipes under PGD-10, FGSM", cfg,
                         ansm_dir / "val-scores.json")
            winner, rows = choose(res)
            write_json_atomic(val_json, {"winner": winner, "recipes": rows, "rule": RULE, "n_forged": res["n_forged"],
                                         "scores": "val-scores.json"})
        winner = json.loads(val_json.read_text())["winner"]
        log(f"val chose: {winner}")
    if last >= 4:  # 5. the winner's other seeds
        ckpts = {f"s{s}": (ansm_dir / "val" / slug(winner) / "ansm" if s == cfg.seeds[0] else
                           _train_ansm(cfg, localizer, casia, adv, winner, s, ansm_dir / "seeds" / f"{slug(winner)}-s{s}"))
                 for s in cfg.seeds}
    if last >= 5:  # 6. test, once
        test_json, adaptive_json = ansm_dir / "test.json", ansm_dir / "adaptive.json"
        if not test_json.exists():
            _score(localizer, _forged(casia, "test"), [s for s, _ in demo_attacks()], ckpts, "test: oblivious attacks",
                   cfg, test_json)
        if not adaptive_json.exists():
            specs = [AttackSpec("pgd", "pgd", PGD)] + [AttackSpec(f"adaptive-{k}", "pgd", PGD, adaptive=k,
                                                                  reference="pgd") for k in ckpts]
            _score(localizer, _forged(casia, "test", cfg.adaptive_n), specs, ckpts, "test: adaptive attacks", cfg,
                   adaptive_json)
    if last >= 6:  # 7. attackers who know the defense: plain vs robust ANSM vs adversarial fine-tuning
        from ansm.benchmark import real_informed

        informed_json = ansm_dir / "informed.json"
        if not informed_json.exists():
            checkpoints = real_informed.train_defenses(cfg, localizer, casia, adv, winner, ckpts, ansm_dir / "informed")
            write_json_atomic(informed_json, real_informed.score(cfg, localizer, casia, checkpoints,
                                                                 ansm_dir / "informed"))
    from ansm.benchmark.real_report import real_report

    done = load_finished(out)
    (out / "report.md").write_text(real_report(done))
    return done


def load_finished(out: str | Path) -> dict[str, Any]:
    """What the stages under ``out`` have finished (nothing is run): the keys :func:`real_report` reads."""
    from ansm.utils import read_json

    out = Path(out)
    meta = out / "real-benchmark.json"
    if not meta.is_file():
        raise ConfigError(f"{out}: no real benchmark here (run `ansm benchmark --preset real --out {out}`)")
    cfg = read_json(meta, ConfigError, "real benchmark settings")["config"]
    summary = (Path(cfg["localizer"]).parent if cfg.get("localizer") else out / "localizer" / "train") / "summary.json"
    files = {"protocol": out / "localizer" / "protocol.json", "pgd": out / "localizer" / "pgd.json",
             "val": out / "ansm" / "val.json", "test": out / "ansm" / "test.json",
             "adaptive": out / "ansm" / "adaptive.json", "informed": out / "ansm" / "informed.json"}
    done: dict[str, Any] = {"config": cfg}
    if summary.is_file() and "val_history" in (trained := read_json(summary, ConfigError, "training summary")):
        done["localizer"] = trained
    done.update({k: read_json(p, ConfigError, f"{k} results") for k, p in files.items() if p.is_file()})
    if "test" in done and "adaptive" not in done:
        del done["test"]
    return done


def _check_resume(out: Path, cfg: RealConfig) -> None:
    """Refuse to mix two configurations' results in one folder (device and adaptive set size aside)."""
    path = out / "real-benchmark.json"
    free = ("device", "preset", "eval_batch")
    if path.is_file():
        saved = json.loads(path.read_text()).get("config", {})
        defaults = asdict(RealConfig())  # a setting added since that run was started had its default then
        for key, value in asdict(cfg).items():
            if key not in free and (was := saved.get(key, defaults[key])) != value:
                from ansm.errors import CheckpointError

                raise CheckpointError(f"{out}: holds a real benchmark with {key}={was!r}, now {value!r} "
                                      "(use a new --out)")
    else:
        write_json_atomic(path, {"config": asdict(cfg)})

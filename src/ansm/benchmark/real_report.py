"""The real benchmark's tables (markdown), from what :func:`ansm.benchmark.real.run_real` has finished.

Sections, each present once its stages are done: ``localizer`` (the real protocol per dataset, and PGD on
CASIA v1 test), ``val`` (the recipe comparison), ``test`` (clean / attacked / defended / clean+ANSM F1 and
recovery per attack, mean ± sd over ANSM seeds) and, with ``--until informed``, the plain ANSM, robust ANSM and
adversarial fine-tuning under attackers who know them (:func:`ansm.benchmark.real_informed.informed_section`). ``scripts/update_readme.py real`` copies them into the README.
"""

from __future__ import annotations

import statistics
from typing import Any

from ansm.eval.readme import markdown_table


def mean_sd(values: list[float | None]) -> str:
    """``mean ± sd`` over the values that exist (one value: itself; none: "-")."""
    vals = [v for v in values if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f}"


def localizer_section(done: dict[str, Any]) -> str:
    protocol, pgd, cfg = done["protocol"], done["pgd"], done["config"]
    rows = [[k, r["n_images"], r["n_forged"], *("n/a" if r[c] is None else r[c] for c in
                                               ("f1", "iou", "f1_best", "pixel_auc", "image_auc", "authentic_fp_rate")),
             protocol["mask_conventions"][k]] for k, r in protocol["datasets"].items()]
    table = markdown_table(["dataset", "images", "forged", "F1@0.5", "IoU@0.5", "best-F1", "pixel AUC", "image AUC",
                            "auth. FP", "mask marks"], rows)
    c, a = pgd["clean"], pgd["pgd"]
    tail = (f"Under PGD-10 at 8/255 (white-box on the bare localizer, {a['n_forged']} forged CASIA v1 test images): "
            f"F1@0.5 {c['f1']:.3f} -> {a['f1']:.3f}.")
    summary = done.get("localizer")
    if summary is None:
        head = f"Localizer `{cfg['localizer']}` (given; no training summary next to it)."
    else:
        history = ", ".join(f"{h['step']}: {h['f1']:.3f}" for h in summary["val_history"])
        t = summary["config"]
        head = (f"{t['arch']} trained on CASIA v1 `train` only: {t['steps']} steps, batch {t['batch_size']}, "
                f"{t['crop']}-px crops, lr {t['lr']:g} ({summary['train_s'] / 60:.0f} min with validation"
                f"{_resumed(summary)}{_environment(summary)}). Val "
                f"F1@0.5 by step ({history}) chose step {summary['chosen_step']} (val F1 {summary['val']['f1']:.3f}); "
                "`test` was evaluated once, after.")
    return (f"{table}\n\n{head} Every image at native resolution (over 1 MP in tiles); F1/IoU are means over forged "
            f"images at threshold 0.5, auth. FP the share of authentic pixels flagged. {tail}")


def _resumed(summary: dict[str, Any]) -> str:
    """A resumed training's time covers only the steps after the resume: say so, not a whole run's time."""
    start = summary.get("resumed_from") or 0
    return f" for steps {start}-{summary['steps']}, the run having resumed at step {start}" if start else ""


def _environment(summary: dict[str, Any]) -> str:
    """Where the training ran, since the CPU thread count changes a run's result (:func:`ansm.utils.run_environment`)."""
    envs = summary.get("environments") or []  # (absent from summaries written before it was recorded)
    return "".join(f"; {'then ' if i else ''}torch {e['torch']}, {e['device']}, {e['cpu_threads']} CPU threads"
                   for i, e in enumerate(envs))


def val_section(done: dict[str, Any]) -> str:
    val, cfg = done["val"], done["config"]
    rows = [[r, v["f1_clean"], v["f1_clean_def"], *(mean_sd([v[k]]) for k in ("recovery_pgd", "recovery_fgsm",
                                                                          "recovery_mean")),
             "**chosen**" if r == val["winner"] else ""] for r, v in val["recipes"].items()]
    table = markdown_table([f"recipe (val, seed {cfg['seeds'][0]})", "clean F1", "clean+ANSM F1", "recovery PGD",
                            "recovery FGSM", "mean", ""], rows)
    shard = f"every {cfg['attack_shard'].split('/')[1]}th train image" if cfg["attack_shard"] else "the train split"
    return (f"{table}\n\nVal: {val['n_forged']} forged CASIA v1 `val` images. Every recipe: {cfg['stage1_steps']} "
            f"stage-1 + {cfg['stage2_steps']} stage-2 steps at batch {cfg['ansm_batch']} on {cfg['crop']}-px crops of "
            f"CASIA v1 `train`, half the steps from the PGD-10 and FGSM attack sets ({shard}), half attacked online "
            f"(FGSM or PGD-3, 4-10/255); FFA taps {cfg['taps']}. Rule: {val['rule']}.")


def test_section(done: dict[str, Any]) -> str:
    from ansm.demo import demo_attacks

    test, adaptive, cfg = done["test"], done["adaptive"], done["config"]
    keys = [f"s{s}" for s in cfg["seeds"]]
    seen = {spec.name: trained for spec, trained in demo_attacks()}
    rows = []
    for name, entry in test["attacks"].items():
        ds = [entry["defenses"][k] for k in keys]
        rows.append([name, "trained" if seen.get(name) else "unseen", entry["f1_clean"], entry["f1_adv"],
                     mean_sd([d["f1_def"] for d in ds]), mean_sd([d["f1_clean_def"] for d in ds]),
                     mean_sd([d["recovery"] for d in ds])])
    a = adaptive["attacks"]
    white = [a[f"adaptive-{k}"]["defenses"][k] for k in keys]
    gray = [a[f"adaptive-{keys[(i + 1) % len(keys)]}"]["defenses"][k] for i, k in enumerate(keys)]
    for label, ds in (("pgd gray-box (through another seed's ANSM)", gray), ("pgd white-box (through this ANSM)", white)):
        rows.append([label, f"adaptive, first {adaptive['n_forged']}", a["pgd"]["f1_clean"], a["pgd"]["f1_adv"],
                     mean_sd([d["f1_def"] for d in ds]), mean_sd([d["f1_clean_def"] for d in ds]),
                     mean_sd([d["recovery"] for d in ds])])
    table = markdown_table(["attack (CASIA v1 test)", "", "clean F1", "attacked", "defended", "clean+ANSM", "recovery"],
                           rows)
    return (f"{table}\n\nTest: {test['n_forged']} forged CASIA v1 `test` images at native resolution, F1@0.5 per "
            f"image. Defended columns: mean ± sd over ANSM seeds {', '.join(map(str, cfg['seeds']))} of the recipe "
            f"chosen on val ({done['val']['winner']}); all seeds see the same adversarial images, crafted on the bare "
            "localizer (oblivious) except the adaptive rows: PGD-10 at 8/255 through localizer∘ANSM, scored on that "
            "ANSM (white-box) or on the next seed's (gray-box). recovery = (defended - attacked) / (clean - attacked), "
            "given when the attack took at least 0.05 F1 away.")


def real_report(done: dict[str, Any]) -> str:
    """The finished sections, each under a heading."""
    parts = ["# Real-forgery benchmark", f"Preset `{done['config']['preset']}`."]
    if "protocol" in done and "pgd" in done:
        parts += ["## Localizer", localizer_section(done)]
    if "val" in done:
        parts += ["## ANSM recipes on val", val_section(done)]
    if "test" in done:
        parts += ["## ANSM on CASIA v1 test", test_section(done)]
    if "informed" in done:
        from ansm.benchmark.real_informed import informed_section

        parts += ["## Attackers who know the defense (CASIA v1 test)", informed_section(done)]
    return "\n\n".join(parts) + "\n"

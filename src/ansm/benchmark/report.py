"""Turn the per-image results of a benchmark into numbers, sanity checks, and report.{json,md,html}.

Numbers per cell (threat x attack x eps x defense), each a mean over forged images, then mean and sample
standard deviation over the defense's training seeds:

* ``f1``, ``iou`` at threshold 0.5 and pixel ``auc`` of the defended prediction on the attacked images;
* ``f1_ci``: a bootstrap 95% interval over images (resampled jointly across seeds);
* ``recovery = (f1_def - f1_ref) / (f1_clean - f1_ref)``, where ``f1_clean`` is the bare localizer on clean
  images and ``f1_ref`` the bare localizer under the *same* attack (adaptive: white-box PGD on the bare
  localizer). Gray-box has no bare version, so no recovery; nor where the attack took under 0.05 F1 away or fewer
  than 20 forged images were scored (``ansm.defense.evaluate.reportable_recovery``);
* ``retention = f1_clean_def / f1_clean``: what the defense keeps of the clean F1 (1 = harmless);
* ``fp``: share of pixels flagged on the authentic images (after attack and defense).

Worst case: per image, the lowest defended F1 over every attack at ``eps_main``, then averaged.

Sanity checks, each able to fail and each aimed at a real bug (docs/benchmark.md): an unbounded budget takes
every defense's F1 to ~0 (gradient masking, broken projections); the gradient-free Square attack does not beat
the gradient attack by more than ``check_margin`` (obfuscated gradients); the gradient attack alone is at least as
strong as the oblivious ones (a gradient that does not reach the defense); doubling the adaptive steps lowers F1
by at most ``check_margin`` (convergence); F1 does not rise with eps for the gradient attack (``tolerance``).
The adaptive row folds the oblivious images into its worst case; the checks use the gradient attack alone.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from ansm.benchmark.config import BenchmarkConfig
from ansm.benchmark.defenses import Defense
from ansm.defense.evaluate import reportable_recovery
from ansm.eval.stats import bootstrap_ci
from ansm.utils import write_json_atomic, write_text_atomic

SERIES = [("oblivious", "fgsm"), ("oblivious", "pgd"), ("transfer", "pgd"), ("gray-box", "pgd"),
          ("adaptive-gradient", "pgd"), ("adaptive", "pgd"), ("gradient-free", "square"), ("unbounded", "pgd")]
SERIES_TEXT = {"adaptive-gradient": "adaptive (gradient only)", "gradient-free": "Square (gradient-free)"}
THREAT_TEXT = {
    "oblivious": "attacks the bare localizer; the defense is unknown to the attacker (the paper's setting)",
    "transfer": "PGD on a different surrogate localizer, then tested on the target",
    "gray-box": "PGD through a surrogate ANSM trained with another seed (same recipe, unknown weights)",
    "adaptive-gradient": "white-box PGD through defense + localizer end to end (BPDA for non-differentiable steps, "
                         "every attacker view), worst case over views, objectives and restarts",
    "adaptive": "the adaptive-gradient images or the oblivious ones, whichever is worse per image (an attacker who "
                "knows the defense may still ignore it)",
    "gradient-free": "Square attack (score-based, no gradients) on the defended output: the check on obfuscated gradients",
    "unbounded": "the gradient attack at an eps no defense survives: the check on gradient masking",
}


def _mean(values: list[float], select: list[bool]) -> float:
    v = np.array(values, dtype=np.float64)[np.array(select, dtype=bool)]
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def _stats(res: dict[str, Any]) -> dict[str, float]:
    out = {k: _mean(res[k], res["forged"]) for k in ("f1", "iou", "auc")}
    out["fp"] = _mean(res["fp_rate"], [not f for f in res["forged"]]) if "fp_rate" in res else math.nan
    return out


def _agg(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample SD over seeds; ``(None, None)`` when no seed has a value (e.g. no reportable recovery)."""
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def _eps_name(eps: float) -> str:
    return f"{eps * 255:g}/255"


def build_report(cfg: BenchmarkConfig, defenses: list[Defense], units: list, cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    groups: dict[str, list[Defense]] = {}
    for d in defenses:
        groups.setdefault(d.group, []).append(d)
    # instance-level numbers: inst[(threat, attack, eps)][defense key]
    inst: dict[tuple, dict[str, dict[str, float]]] = {}
    per_image: dict[tuple, dict[str, dict[str, Any]]] = {}
    for u in units:
        c = cells[u.key]
        parts = [((u.threat, u.attack, u.eps), c["defenses"])]
        if "gradient_only" in c:
            parts.append((("adaptive-gradient", u.attack, u.eps), c["gradient_only"]))
        for key, by_def in parts:
            for dkey, res in by_def.items():
                inst.setdefault(key, {})[dkey] = _stats(res)
                per_image.setdefault(key, {})[dkey] = res
    clean = inst[("clean", None, None)]
    f1_clean = clean["none"]["f1"]
    n_forged = int(sum(per_image[("clean", None, None)]["none"]["forged"]))

    def reference(threat: str, attack: str, eps: float) -> float | None:
        """The bare localizer under the same attack; gray-box has none (no surrogate of 'no defense')."""
        if threat == "gray-box":
            return None
        return inst.get((threat, attack, eps), {}).get("none", {}).get("f1")

    rows: list[dict[str, Any]] = []
    for (threat, attack, eps), by_def in inst.items():
        if threat == "clean":
            continue
        ref = reference(threat, attack, eps)
        for group, members in groups.items():
            present = [d for d in members if d.key in by_def]
            if not present:
                continue
            seeds = {}
            for d in present:
                s = by_def[d.key]
                seeds[d.key] = {**s, "recovery": reportable_recovery(f1_clean, ref, s["f1"], n_forged),
                                "retention": clean[d.key]["f1"] / f1_clean if f1_clean > 0 else None}
            row: dict[str, Any] = {"threat": threat, "attack": attack, "eps": eps, "defense": group, "n_seeds": len(present)}
            for metric in ("f1", "iou", "auc", "recovery", "retention", "fp"):
                row[metric], row[f"{metric}_sd"] = _agg([v[metric] for v in seeds.values()])
            forged = np.array(per_image[(threat, attack, eps)][present[0].key]["forged"], dtype=bool)
            row["f1_ci"] = bootstrap_ci(np.array([per_image[(threat, attack, eps)][d.key]["f1"] for d in present],
                                                 dtype=np.float64)[:, forged], seed=cfg.seed)
            row["f1_ref"] = ref
            row["seeds"] = seeds
            rows.append(row)

    # clean, per group
    clean_rows = {}
    for group, members in groups.items():
        f1, sd = _agg([clean[d.key]["f1"] for d in members])
        ret, ret_sd = _agg([clean[d.key]["f1"] / f1_clean if f1_clean > 0 else None for d in members])
        clean_rows[group] = {"f1": f1, "f1_sd": sd, "retention": ret, "retention_sd": ret_sd, "n_seeds": len(members),
                             "iou": _agg([clean[d.key]["iou"] for d in members])[0],
                             "auc": _agg([clean[d.key]["auc"] for d in members])[0],
                             "fp": _agg([clean[d.key]["fp"] for d in members])[0]}

    # per-image worst case over every attack at eps_main
    worst: dict[str, dict[str, Any]] = {}
    for group, members in groups.items():
        per_seed = []
        images = None
        for d in members:
            lists = [per_image[k][d.key]["f1"] for k in per_image if k[0] != "clean" and k[2] is not None
                     and abs(k[2] - cfg.eps_main) < 1e-9 and d.key in per_image[k]]
            forged = per_image[("clean", None, None)][d.key]["forged"]
            w = np.min(np.array(lists, dtype=np.float64), axis=0)
            per_seed.append(_mean(w.tolist(), forged))
            images = w[np.array(forged, dtype=bool)] if images is None else images + w[np.array(forged, dtype=bool)]
        mean, sd = _agg(per_seed)
        worst[group] = {"f1": mean, "f1_sd": sd, "per_image": (images / len(members)).tolist()}

    # convergence: adaptive F1 against steps at eps_main
    steps_curves: dict[str, dict[str, float]] = {}
    for group, members in groups.items():
        by_k: dict[str, list[float]] = {}
        for d in members:
            u = next((u for u in units if u.threat == "adaptive" and u.defense == d.key and abs(u.eps - cfg.eps_main) < 1e-9), None)
            if u is None or "curve" not in cells[u.key]:
                continue
            forged = cells[u.key]["defenses"][d.key]["forged"]
            for k, vals in cells[u.key]["curve"].items():
                by_k.setdefault(k, []).append(_mean(vals, forged))
        if by_k:
            steps_curves[group] = {k: float(np.mean(v)) for k, v in sorted(by_k.items(), key=lambda kv: int(kv[0]))}

    report: dict[str, Any] = {
        "config": cfg.to_dict(),
        "data": {"spec": cfg.data, "n_images": len(per_image[("clean", None, None)]["none"]["f1"]),
                 "n_forged": int(sum(per_image[("clean", None, None)]["none"]["forged"]))},
        "defenses": {g: {"family": m[0].family, "seeds": [d.seed for d in m if d.seed is not None],
                         "bpda": m[0].uses_bpda} for g, m in groups.items()},
        "f1_clean": f1_clean,
        "clean": clean_rows,
        "rows": rows,
        "worst_case": worst,
        "steps_curves": steps_curves,
        "threats": {t: THREAT_TEXT[t] for t in ["oblivious", *cfg.threats] for t in
                    (["adaptive-gradient", t, "gradient-free", "unbounded"] if t == "adaptive" else [t])
                    if t in THREAT_TEXT},
    }
    report["checks"] = sanity_checks(report, cfg)
    report["notes"] = _notes(cfg, report)
    return report


def _row(report: dict[str, Any], threat: str, attack: str, eps: float, group: str) -> dict[str, Any] | None:
    return next((r for r in report["rows"] if r["threat"] == threat and r["attack"] == attack and r["defense"] == group
                 and abs(r["eps"] - eps) < 1e-9), None)


def _seed_f1(report: dict[str, Any], threat: str, attack: str, eps: float, group: str, key: str) -> float | None:
    r = _row(report, threat, attack, eps, group)
    return r["seeds"][key]["f1"] if r and key in r["seeds"] else None


def sanity_checks(report: dict[str, Any], cfg: BenchmarkConfig) -> dict[str, Any]:
    """The checks of the module docstring, per trained seed of every defense. Each compares two *different*
    measurements, so none holds by construction: a broken attack or a masked defense fails one of them."""
    tol, margin = cfg.tolerance, cfg.check_margin
    results: list[dict[str, Any]] = []

    def add(name: str, subject: str, ok: bool, detail: str) -> None:
        results.append({"check": name, "subject": subject, "ok": bool(ok), "detail": detail})

    eps = cfg.eps_main
    for row in report["rows"]:
        if row["threat"] != "adaptive-gradient" or abs(row["eps"] - eps) > 1e-9:
            continue
        group = row["defense"]
        for key, s in row["seeds"].items():
            grad = s["f1"]
            unb = _seed_f1(report, "unbounded", "pgd", cfg.unbounded_eps, group, key)
            if unb is not None:
                add("unbounded budget takes F1 to ~0", f"{key} at {_eps_name(cfg.unbounded_eps)}",
                    unb <= cfg.unbounded_f1_max, f"F1 {unb:.3f} (must be <= {cfg.unbounded_f1_max})")
            sq = _seed_f1(report, "gradient-free", "square", eps, group, key)
            if sq is not None:
                add("gradient-free attack not stronger", f"{key} at {_eps_name(eps)}", sq >= grad - margin,
                    f"Square F1 {sq:.3f} vs gradient {grad:.3f} (margin {margin})")
            obl = [f for a in ("pgd", "fgsm") if (f := _seed_f1(report, "oblivious", a, eps, group, key)) is not None]
            if obl:
                add("gradient attack >= oblivious", f"{key} at {_eps_name(eps)}", grad <= min(obl) + margin,
                    f"gradient F1 {grad:.3f} vs oblivious {min(obl):.3f} (margin {margin})")
    half = max(1, cfg.adaptive_steps // 2)
    for group, curve in report["steps_curves"].items():
        a, b = curve.get(str(half)), curve.get(str(cfg.adaptive_steps))
        if a is not None and b is not None:
            add("converged (doubling the steps)", group, a - b <= margin,
                f"F1 {a:.3f} after {half} steps, {b:.3f} after {cfg.adaptive_steps} (margin {margin})")
    for threat, attack in (("adaptive-gradient", "pgd"), ("oblivious", "pgd")):
        for group in report["clean"]:
            if threat == "oblivious" and group != "none":
                continue  # an oblivious attacker does not optimise against the defense: not a white-box series
            series = sorted((r["eps"], r["f1"]) for r in report["rows"]
                            if r["threat"] == threat and r["attack"] == attack and r["defense"] == group)
            if len(series) < 2:
                continue
            bad = [(x, y) for x, y in zip(series, series[1:]) if y[1] > x[1] + tol]
            add("larger eps never raises F1", f"{SERIES_TEXT.get(threat, threat)} {attack} on {group}", not bad,
                "F1 " + ", ".join(f"{f:.3f}@{_eps_name(e)}" for e, f in series))
    failed = [r for r in results if not r["ok"]]
    lines = [f"sanity checks: {len(results) - len(failed)} passed, {len(failed)} failed (margin {margin} F1, "
             f"eps tolerance {tol} F1)"]
    lines += [f"  FAIL {r['check']}: {r['subject']}: {r['detail']}" for r in failed]
    return {"passed": len(results) - len(failed), "failed": len(failed), "results": results, "lines": lines}


def _notes(cfg: BenchmarkConfig, report: dict[str, Any]) -> list[str]:
    bpda = [g for g, d in report["defenses"].items() if d["bpda"]]
    notes = [
        f"BPDA for the non-differentiable defenses ({', '.join(bpda) or 'none'}): the identity backward pass, and "
        "for JPEG also a differentiable JPEG approximation; the adaptive attack runs through every such view and "
        "keeps the worst per image. None of the defenses is randomized, so EOT reduces to one sample.",
        f"Adaptive attack: {cfg.adaptive_steps} PGD steps (alpha eps/4, halved at 50% and 75%), "
        f"{cfg.adaptive_restarts} random start(s) per objective ({', '.join(cfg.adaptive_objectives)}), at "
        f"{', '.join(_eps_name(e) for e in cfg.adaptive_eps)}; per image the worst case by defended F1; as in "
        "AutoAttack, each run attacks only the forged images whose F1 is still above 0. 'adaptive (gradient only)' "
        "is that attack alone; 'adaptive' also takes the oblivious PGD/FGSM image where it is worse.",
        f"Checks: unbounded = the gradient attack at {_eps_name(cfg.unbounded_eps)}, {cfg.unbounded_steps} steps, must "
        f"leave F1 <= {cfg.unbounded_f1_max}; Square: {cfg.square_queries} queries per objective at "
        f"{_eps_name(cfg.eps_main)} on the defended output; convergence compares the gradient attack after "
        f"{max(1, cfg.adaptive_steps // 2)} and {cfg.adaptive_steps} steps (same run, best iterate). Margin "
        f"{cfg.check_margin} F1.",
        f"Oblivious/transfer/gray-box PGD: {cfg.pgd_steps} steps, alpha 2.5 eps/steps, random start.",
        f"ANSM here is the benchmark's recipe \"online FFA + MgR\" ({cfg.ansm_stage1_steps} + {cfg.ansm_stage2_steps} "
        f"steps, batch {cfg.ansm_batch}, online attacks), not the demo's (MgR alone from offline attack sets).",
        f"Equal budgets: the denoisers get ANSM's network, eps_d and {cfg.ansm_stage1_steps + cfg.ansm_stage2_steps} "
        f"steps at batch {cfg.ansm_batch} (pixel L1, or L1 on the localizer's tapped features, HGD-style); "
        f"adversarial fine-tuning gets {cfg.advft_budget} steps at batch {cfg.ansm_batch}, "
        + (f"TRADES (beta {cfg.advft_trades:g}) at " if cfg.advft_trades > 0 else "every example PGD at ")
        + f"{_eps_name(cfg.advft_eps)}, with the target's benign-noise augmentation kept.",
        f"Seeds: ANSM {cfg.ansm_seeds}, trained baselines {cfg.baseline_seeds}; ± is the sample SD over seeds "
        "(no ± with one seed); [lo, hi] is a bootstrap 95% interval over images.",
    ]
    if cfg.preset == "quick":
        notes.append("quick preset (2 CPU cores): 64x64 held-out synthetic test images, "
                     f"{cfg.ansm_seeds} ANSM seeds and {cfg.baseline_seeds} seed per baseline, "
                     f"{cfg.adaptive_restarts} restart per objective; `--preset full` (GPU) uses 3 seeds of "
                     "everything, 3 restarts and 200 steps.")
    return notes


# ------------------------------------------------------------------------------------------------ writing
def _fmt(v: float | None, sd: float | None = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")


def _ci(ci: Any) -> str:
    if not ci or any(c is None or math.isnan(c) for c in ci):
        return "n/a"
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def summary_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The headline table at eps_main: one row per defense, oblivious next to adaptive numbers."""
    eps = report["config"]["eps_main"]
    header = ["defense", "seeds", "clean F1", "retention", "oblivious FGSM", "oblivious PGD", "transfer PGD",
              "gray-box PGD", "adaptive (gradient only)", "adaptive", "Square (gradient-free)", "worst case"]
    body = []
    for group, c in report["clean"].items():
        cells = [group, str(c["n_seeds"]), _fmt(c["f1"], c["f1_sd"]), _fmt(c["retention"], c["retention_sd"])]
        for threat, attack in SERIES[:-1]:  # the unbounded check is at another eps: in the detail table
            r = _row(report, threat, attack, eps, group)
            cells.append(_fmt(r["f1"], r["f1_sd"]) if r else "n/a")
        w = report["worst_case"][group]
        cells.append(_fmt(w["f1"], w["f1_sd"]))
        body.append(cells)
    return header, body


def detail_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["threat", "attack", "eps", "defense", "seeds", "F1", "F1 95% CI (images)", "IoU", "AUC", "recovery",
              "retention", "authentic FP"]
    body = [[SERIES_TEXT.get(r["threat"], r["threat"]), r["attack"], _eps_name(r["eps"]), r["defense"], str(r["n_seeds"]),
             _fmt(r["f1"], r["f1_sd"]), _ci(r.get("f1_ci")), _fmt(r["iou"]), _fmt(r["auc"]),
             _fmt(r["recovery"], r["recovery_sd"]), _fmt(r["retention"]), _fmt(r.get("fp"))]
            for r in sorted(report["rows"], key=lambda r: ([t for t, _ in SERIES].index(r["threat"]), r["attack"], r["eps"]))]
    return header, body


def _md_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])


def markdown(report: dict[str, Any]) -> str:
    cfg, data = report["config"], report["data"]
    out = [f"# ansm benchmark ({cfg['preset']} preset)", "",
           f"{data['n_images']} images ({data['n_forged']} forged) from `{data['spec']}`; F1@0.5 averaged over forged "
           f"images; eps = {_eps_name(cfg['eps_main'])} unless stated. Bare localizer clean F1: {report['f1_clean']:.3f}.",
           "", "## Summary (F1 under attack; higher is better)", "", _md_table(*summary_table(report)), "",
           "Threat models:", ""]
    out += [f"- **{t}**: {text}" for t, text in report["threats"].items()]
    out += ["", "## Sanity checks", "", *[f"    {line}" for line in report["checks"]["lines"]], "",
            "## All cells", "", _md_table(*detail_table(report)), "", "## Notes", ""]
    out += [f"- {n}" for n in report["notes"]]
    t = report.get("timings_s", {})
    if t:
        per_model = ", ".join(f"{k} {v:.0f} s" for k, v in t.get("per_model", {}).items())
        out += ["", f"Runtime of this invocation: {t.get('total', 0):.0f} s (models {t.get('models', 0):.0f} s, attacks "
                    f"{t.get('attacks', 0):.0f} s). Training times: {per_model or 'n/a'}."]
    return "\n".join(out) + "\n"


def figures(report: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes: F1 against eps per threat, F1 against adaptive steps, per-image worst case per defense."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pngs: dict[str, bytes] = {}

    def save(fig: Any, name: str) -> None:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=100)
        plt.close(fig)
        pngs[name] = buf.getvalue()

    colour = {g: f"C{i % 10}" for i, g in enumerate(report["clean"])}  # one colour per defense in every plot
    # series measured at a single eps (e.g. adaptive in the quick preset) are in the tables, not on this plot
    series = [(t, a) for t, a in SERIES
              if len({r["eps"] for r in report["rows"] if r["threat"] == t and r["attack"] == a}) > 1]
    if series:
        fig, axes = plt.subplots(1, len(series), figsize=(3.4 * len(series), 3.2), squeeze=False, sharey=True)
        for ax, (threat, attack) in zip(axes[0], series):
            for group in report["clean"]:
                pts = sorted((r["eps"] * 255, r["f1"]) for r in report["rows"]
                             if r["threat"] == threat and r["attack"] == attack and r["defense"] == group)
                if pts:
                    ax.plot(*zip(*pts), marker="o", label=group, color=colour[group])
            ax.set_title(f"{threat} {attack}", fontsize=9)
            ax.set_xlabel("eps (/255)")
        axes[0][0].set_ylabel("F1 (defended)")
        axes[0][-1].legend(fontsize=7)
        save(fig, "f1_vs_eps")

    if report["steps_curves"]:
        fig, ax = plt.subplots(figsize=(5, 3.4))
        for group, curve in report["steps_curves"].items():
            ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label=group, color=colour[group])
        ax.set_xscale("log")
        ax.set_xlabel("adaptive PGD steps")
        ax.set_ylabel("F1 (defended)")
        ax.set_title(f"adaptive attack convergence at {_eps_name(report['config']['eps_main'])}", fontsize=9)
        ax.legend(fontsize=7)
        save(fig, "f1_vs_steps")

    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(report["worst_case"])), 3.4))
    names = list(report["worst_case"])
    ax.boxplot([report["worst_case"][g]["per_image"] for g in names])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("per-image worst-case F1")
    ax.set_title("worst case over all attacks, per image", fontsize=9)
    save(fig, "worst_case")
    return pngs


def html(report: dict[str, Any], pngs: dict[str, bytes]) -> str:
    """A self-contained page: the markdown's tables as HTML plus the figures inlined as data URIs."""
    from html import escape

    def table(header: list[str], body: list[list[str]]) -> str:
        head = "".join(f"<th>{escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    cfg = report["config"]
    imgs = "".join(f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(v).decode()}"></figure>'
                   for k, v in pngs.items())
    checks = "".join(f"<li>{escape(line)}</li>" for line in report["checks"]["lines"])
    threats = "".join(f"<li><b>{escape(t)}</b>: {escape(x)}</li>" for t, x in report["threats"].items())
    notes = "".join(f"<li>{escape(n)}</li>" for n in report["notes"])
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}table{border-collapse:collapse;"
             "font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
             "td:first-child,th:first-child{text-align:left}img{max-width:100%}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>ansm benchmark</title><style>{style}</style></head>"
            f"<body><h1>ansm benchmark ({escape(cfg['preset'])} preset)</h1>"
            f"<p>{report['data']['n_images']} images ({report['data']['n_forged']} forged) from <code>{escape(cfg['data'])}</code>; "
            f"F1@0.5 over forged images; eps {_eps_name(cfg['eps_main'])}. Bare clean F1 {report['f1_clean']:.3f}.</p>"
            f"<h2>Summary</h2>{table(*summary_table(report))}<ul>{threats}</ul><h2>Sanity checks</h2><ul>{checks}</ul>"
            f"<h2>Plots</h2>{imgs}<h2>All cells</h2>{table(*detail_table(report))}<h2>Notes</h2><ul>{notes}</ul>"
            "</body></html>")


def write_reports(out: Path, report: dict[str, Any]) -> None:
    pngs = figures(report)
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", markdown(report))
    write_text_atomic(out / "report.html", html(report, pngs))

"""How much forensic evidence can an L-inf budget erase without a model? A probe on ``val`` (issue 14) that can
rule a bar out: if a localizer *trained on* the forger's model-free erasure at eps cannot find the region, no defense
can keep F1 at that eps either, since the erased image is something any attacker can produce without knowing it.

The erasure is ``noise-match`` (``ansm.attacks.equalize``): both sides of the mask brought to one noise level,
the louder side smoothed part of the way, the quieter side given Gaussian (camera-like) noise, at most eps per
value, chosen per image from the image and the mask alone. The earlier probe (``noise_equalization.py``) applied
each half alone, with random signs, to localizers that had never seen either; this one does both and trains
against it.

Rows, on 96 ``val`` images (photos and scenes of neither train nor test), F1 per forged image with a 95% bootstrap
interval over images:

* the target localizer (the robust_val one: 500 steps on clean training images);
* that localizer fine-tuned 500 more steps (its own budget again; lr 1e-3, batch 16, its training pool) with half
  of every batch erased by noise-match at 2, 4 or 8 /255 in turn: it has seen the erasure;
* the control: the same 500 steps with no erasure, so a gain is not just more training.

Columns: clean, and noise-match at 2, 4 and 8 /255 (one seed per batch and eps). A last row says what the erasure
does to what it targets: the two sides' measured noise levels. Nothing here is tuned: every setting
was fixed before the first run.

    python experiments/erasability.py          # ~10 min on one core; runs/experiments/erasability/
    python experiments/erasability.py --docs   # also writes the table into docs/benchmark.md
"""

from __future__ import annotations

import json
import time

import torch
import torch.nn as nn
from val_probe import REPO, TARGET, require_target, run, val_batches  # (this folder; puts src on the path)
from val_probe import fine_tune as fine_tune_loop

from ansm.attacks import create_attack  # noqa: E402
from ansm.attacks.equalize import side_energies  # noqa: E402
from ansm.eval.metrics import f1_score  # noqa: E402
from ansm.eval.stats import bootstrap_ci  # noqa: E402
from ansm.models.registry import load_localizer, save_localizer  # noqa: E402
from ansm.models.train import TrainLocalizerConfig  # noqa: E402
from ansm.utils import seeded_generator, write_json_atomic  # noqa: E402

OUT = REPO / "runs" / "experiments" / "erasability"
EPS = (2, 4, 8)
N_VAL, FT_STEPS = 96, 500
ROWS = {"target": "target localizer (500 clean steps)",
        "erasure-trained": f"+ {FT_STEPS} steps, half of each batch erased (noise-match 2/4/8 /255)",
        "control": f"+ {FT_STEPS} steps, no erasure (control)"}


def erase(x: torch.Tensor, m: torch.Tensor, eps: int, seed: tuple[int, ...]) -> torch.Tensor:
    match = create_attack("noise-match", lambda z: z[:, :1], eps=eps / 255)  # model-free: the model is not called
    return match(x, m, generator=seeded_generator(*seed, eps))


def fine_tune(erased: bool) -> nn.Module:
    """The target trained ``FT_STEPS`` more steps on its own recipe's batches, half of each erased (or none)."""
    path = OUT / ("erasure-trained" if erased else "control")
    if path.with_suffix(".json").is_file():
        return load_localizer(path)
    target_cfg = json.loads(TARGET.with_suffix(".json").read_text())["training"]["config"]
    cfg = TrainLocalizerConfig(out=str(OUT), steps=FT_STEPS, size=64, pool=target_cfg["pool"], batch_size=16, lr=1e-3,
                               warmup=20, seed=1, noise_std=target_cfg["noise_std"], noise_prob=target_cfg["noise_prob"])

    def half_erased(x: torch.Tensor, m: torch.Tensor, step: int) -> torch.Tensor:
        if not erased:
            return x
        half = len(x) // 2
        return torch.cat([erase(x[:half], m[:half], EPS[step % len(EPS)], (cfg.seed, step)), x[half:]])

    localizer = fine_tune_loop(load_localizer(TARGET), cfg, 0, half_erased)  # the target's own pool (seed 0)
    save_localizer(localizer, path)
    return localizer


def measure() -> dict[str, dict]:
    """Rows not yet in OUT/summary.json (each written when done: a killed run resumes row by row)."""
    require_target()
    OUT.mkdir(parents=True, exist_ok=True)
    summary = json.loads((OUT / "summary.json").read_text()) if (OUT / "summary.json").is_file() else {}
    batches = val_batches(N_VAL)
    views = {"clean": [x for x, _ in batches]}
    views |= {f"{e}/255": [erase(x, m, e, (0, k)) for k, (x, m) in enumerate(batches)] for e in EPS}
    if "gap" not in summary:  # what the erasure does to what it targets: the two sides' measured noise levels
        summary["gap"] = {view: level_gap(xs, batches) for view, xs in views.items()}
        write_json_atomic(OUT / "summary.json", summary)
    builders = {"target": lambda: load_localizer(TARGET), "erasure-trained": lambda: fine_tune(True),
                "control": lambda: fine_tune(False)}
    for name, build in builders.items():
        if name in summary:
            continue
        t = time.perf_counter()
        model = build().eval()
        row: dict = {}
        for view, xs in views.items():
            scores = []
            with torch.no_grad():
                for xv, (_, m) in zip(xs, batches):
                    scores += f1_score(torch.sigmoid(model(xv)), m)[m.flatten(1).amax(1) > 0.5].tolist()
            row[view] = {"f1": sum(scores) / len(scores), "ci": bootstrap_ci(scores), "n_forged": len(scores)}
        row["seconds"] = round(time.perf_counter() - t)
        summary[name] = row
        print(json.dumps({name: row}), flush=True)
        write_json_atomic(OUT / "summary.json", summary)
    return summary


def level_gap(xs: list[torch.Tensor], batches: list) -> float:
    """Median over forged images of |log(region's high-pass energy / the host's)|: 0 when the levels match."""
    gaps = []
    for xv, (_, m) in zip(xs, batches):
        inside, outside = side_energies(xv, m)
        gaps += (inside.log() - outside.log()).abs()[m.flatten(1).amax(1) > 0.5].tolist()
    return float(torch.tensor(gaps).median())


def table(summary: dict[str, dict]) -> str:
    n = summary["target"]["clean"]["n_forged"]
    cols = ["clean"] + [f"{e}/255" for e in EPS]
    lines = [f"| `val` ({n} forged images), F1 [95% bootstrap interval] | clean | "
             + " | ".join(f"noise-match {c}" for c in cols[1:]) + " | seconds |", "|---|---|---|---|---|---|"]
    for name, label in ROWS.items():
        if name in summary:
            r = summary[name]
            lines.append(f"| {label} | " + " | ".join(f"{r[c]['f1']:.3f} [{r[c]['ci'][0]:.2f}, {r[c]['ci'][1]:.2f}]"
                                                      for c in cols) + f" | {r['seconds']} |")
    lines.append("| what the erasure targets: region vs host noise level, median abs(log energy ratio) (0: matched) | "
                 + " | ".join(f"{summary['gap'][c]:.2f}" for c in cols) + " | - |")
    return "\n".join(lines)


if __name__ == "__main__":
    run(__doc__, "erasability", measure, table)

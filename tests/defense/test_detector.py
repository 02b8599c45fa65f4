"""The attack detector: it learns the attack (not the labels), its checkpoint round-trips, a detector-aware attack
differentiates through it, training resumes exactly, and the CLI speaks in one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from ansm import cli
from ansm.attacks import create_attack
from ansm.attacks.builder import quantize
from ansm.defense.detector import (AttackDetector, DetectorAttack, TrainDetectorConfig, auc_and_tpr,
                                   evaluate_detector, load_detector, save_detector, threshold_at_fpr, train_detector)
from ansm.errors import CheckpointError, ConfigError

runner = CliRunner()


def _fit(x: torch.Tensor, y: torch.Tensor, steps: int = 40, seed: int = 0) -> AttackDetector:
    torch.manual_seed(seed)
    det = AttackDetector(width=8)
    opt = torch.optim.Adam(det.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(det(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return det.eval()


@pytest.fixture(scope="module")
def fgsm_split(trained_localizer, synthetic_batch):
    """Clean and FGSM-8/255 (8-bit) images of the fixture batch: first half for training, second half held out."""
    x, m = synthetic_batch["image"], synthetic_batch["mask"]
    x_a = quantize(create_attack("fgsm", trained_localizer, eps=8 / 255)(x, m), x, 8 / 255)
    h = len(x) // 2
    train_x = torch.cat([x[:h], x_a[:h]])
    train_y = torch.cat([torch.zeros(h), torch.ones(h)])
    return train_x, train_y, x[h:], x_a[h:]


def _heldout_auc(det: AttackDetector, clean: torch.Tensor, adv: torch.Tensor) -> float:
    with torch.no_grad():
        return auc_and_tpr(det(adv).numpy(), det(clean).numpy())[0]


def test_learns_the_attack_not_the_labels(fgsm_split) -> None:
    train_x, train_y, clean, adv = fgsm_split
    assert _heldout_auc(_fit(train_x, train_y), clean, adv) > 0.9
    shuffled = train_y[torch.randperm(len(train_y), generator=torch.Generator().manual_seed(1))]
    assert _heldout_auc(_fit(train_x, shuffled), clean, adv) < 0.8


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    det = AttackDetector(width=4, eps_ref="4/255", use_image=False).eval()
    save_detector(det, tmp_path / "det", threshold=0.7)
    back, meta = load_detector(tmp_path / "det")
    x = torch.rand(2, 3, 20, 28)
    assert torch.equal(det(x), back(x)) and back.config == det.config and meta["threshold"] == 0.7
    from ansm.defense.ansm_net import ANSM, save_ansm

    save_ansm(ANSM(width=4), tmp_path / "ansm")
    with pytest.raises(CheckpointError, match="not an attack-detector checkpoint"):
        load_detector(tmp_path / "ansm")


def test_threshold_at_fpr() -> None:
    neg = torch.arange(100).float().numpy()
    t = threshold_at_fpr(neg, 0.05)
    assert (neg > t).mean() <= 0.05 and (neg >= t).mean() > 0.05


def test_detector_aware_attack_lowers_the_detector_logit(trained_localizer, synthetic_batch, fgsm_split) -> None:
    train_x, train_y, _, _ = fgsm_split
    det = _fit(train_x, train_y)
    data = [{"image": synthetic_batch["image"][i], "mask": synthetic_batch["mask"][i], "name": str(i)}
            for i in range(16, 24)]
    pgd = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 5}
    res = evaluate_detector(det, trained_localizer, data, [DetectorAttack("pgd", "pgd", pgd),
                                                           DetectorAttack("pgd-aware", "pgd", pgd, aware_weight=10.0)],
                            n_boot=50)
    oblivious, aware = res["attacks"]["pgd"], res["attacks"]["pgd-aware"]
    assert aware["mean_p"] < oblivious["mean_p"] - 0.1
    assert res["n_images"] == 8 and aware["aware_weight"] == 10.0 and 0 <= aware["f1_loc"] <= 1


def test_online_aware_pgd_attacks_the_detector_being_trained(trained_localizer, synthetic_batch, fgsm_split) -> None:
    """Adversarial training of the detector: the "aware-pgd" positives are crafted against the detector's current
    weights, so they score lower on it than plain PGD's from the same draw; in budget, and the detector is left
    in its training mode with no gradient on its weights."""
    from ansm.defense.detector import online_attack
    from ansm.utils import seeded_generator

    det = _fit(*fgsm_split[:2]).train()
    det.zero_grad(set_to_none=True)
    x, m = synthetic_batch["image"][16:24], synthetic_batch["mask"][16:24]
    common = (["untargeted"], 8 / 255, 8 / 255, 5)
    plain, _ = online_attack(trained_localizer, x, m, seeded_generator(3), ["pgd"], *common)
    aware, label = online_attack(trained_localizer, x, m, seeded_generator(3), ["aware-pgd"], *common,
                                 detector=det, aware_weights=[10.0])
    assert label == "aware-pgd/untargeted/8.0/w10"
    assert (aware - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert det(aware).mean() < det(plain).mean() - 1.0
    assert det.training and all(p.grad is None for p in det.parameters())
    with pytest.raises(ConfigError, match="needs the detector"):
        online_attack(trained_localizer, x, m, seeded_generator(3), ["aware-pgd"], *common)


def test_aware_weights_are_checked(trained_localizer_path: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="aware_weights must be positive"):
        TrainDetectorConfig(attacks=["aware-pgd"], aware_weights=[0.0])
    res = runner.invoke(cli.app, ["train-detector", "--model", str(trained_localizer_path), "--out",
                                  str(tmp_path / "det"), "--attacks", "aware-pgd", "--aware-weights", "3,x"])
    assert res.exit_code == 2 and res.output.startswith("error:") and "--aware-weights" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1
    res = runner.invoke(cli.app, ["train-detector", "--model", str(trained_localizer_path), "--out",
                                  str(tmp_path / "det"), "--aware-weights", "3"])
    assert res.exit_code == 2 and "add it to --attacks" in res.output, res.output


def test_training_resumes_exactly(tmp_path: Path, trained_localizer) -> None:
    kw = dict(localizer="fixture", steps=4, batch_size=4, pool=6, size=32, attacks=["fgsm"], calib_n=4,
              ckpt_every=1, width=4, device="cpu")
    full, _ = train_detector(TrainDetectorConfig(out=str(tmp_path / "a"), **kw), trained_localizer)

    def stop(step: int, _loss: float) -> None:
        if step == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_detector(TrainDetectorConfig(out=str(tmp_path / "b"), **kw), trained_localizer, on_step=stop)
    resumed, summary = train_detector(TrainDetectorConfig(out=str(tmp_path / "b"), **kw), trained_localizer)
    assert summary["resumed_from"] == 1  # the state saved after step 0; step 1 was interrupted
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="cannot resume, lr"):
        train_detector(TrainDetectorConfig(out=str(tmp_path / "b"), lr=1e-2, **kw), trained_localizer)


def test_cli_train_detector_then_defend(tmp_path: Path, trained_localizer_path: Path, synthetic_batch) -> None:
    from ansm.data.io import write_png
    from ansm.defense.ansm_net import ANSM, save_ansm

    res = runner.invoke(cli.app, ["train-detector", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output
    res = runner.invoke(cli.app, ["train-detector", "--model", str(trained_localizer_path), "--out",
                                  str(tmp_path / "det"), "--steps", "2", "--batch-size", "4", "--pool", "4",
                                  "--size", "32", "--attacks", "fgsm", "--calib-n", "4", "--width", "4",
                                  "--device", "cpu"])
    assert res.exit_code == 0, res.output
    save_ansm(ANSM(width=4), tmp_path / "ansm", localizer=str(trained_localizer_path))
    for i in range(2):
        write_png(tmp_path / "img" / f"img{i}.png", synthetic_batch["image"][i])
    res = runner.invoke(cli.app, ["defend", "--ansm", str(tmp_path / "ansm"), "--input", str(tmp_path / "img"),
                                  "--out", str(tmp_path / "out"), "--detector", str(tmp_path / "det" / "detector"),
                                  "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert res.output.count("attack flag: ") == 2 and "(p=" in res.output
    rows = json.loads((tmp_path / "out" / "defend.json").read_text())["images"]
    assert all(isinstance(r["attack_flag"], bool) and 0 <= r["attack_p"] <= 1 for r in rows)
    # a checkpoint that is not a detector: one error line, exit 2
    res = runner.invoke(cli.app, ["defend", "--ansm", str(tmp_path / "ansm"), "--input", str(tmp_path / "img"),
                                  "--out", str(tmp_path / "out2"), "--detector", str(tmp_path / "ansm")])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error:") and len(res.output.strip().splitlines()) == 1
    assert "not an attack-detector checkpoint" in res.output and "Traceback" not in res.output


def test_serve_fills_the_flag_slot(trained_localizer, synthetic_batch) -> None:
    pytest.importorskip("starlette")
    import io
    import warnings

    from PIL import Image

    from ansm.data.io import tensor_to_uint8
    from ansm.defense.ansm_net import ANSM
    from ansm.serve import create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx`")
        from starlette.testclient import TestClient

    det = AttackDetector(width=4).eval()
    client = TestClient(create_app(trained_localizer, ANSM(width=4).eval(), detector=det, detector_threshold=0.4,
                                   detector_name="det"))
    info = client.get("/api/info").json()
    assert info["detector"] == "det" and info["detector_threshold"] == 0.4
    buf = io.BytesIO()
    Image.fromarray(tensor_to_uint8(synthetic_batch["image"][0])).save(buf, format="PNG")
    body = client.post("/api/predict?attack=fgsm", content=buf.getvalue()).json()
    for row in (body["clean"], body["attacked"]):
        assert 0 <= row["attack_p"] <= 1 and row["attack_flag"] == (row["attack_p"] > 0.4)


class _ConstantDetector(torch.nn.Module):
    """Says the same logit for every image: never flags (negative) or always flags (positive)."""

    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), self.logit) + 0 * x.sum((1, 2, 3))


def test_evaded_counts_forged_images_neither_flagged_nor_localized(trained_localizer, synthetic_batch) -> None:
    from ansm.attacks.builder import quantize
    from ansm.defense.detector import EVADED_F1
    from ansm.eval.metrics import f1_score
    from ansm.utils import seeded_generator

    data = [{"image": synthetic_batch["image"][i], "mask": synthetic_batch["mask"][i], "name": str(i)} for i in range(8)]
    x, m = synthetic_batch["image"][:8], synthetic_batch["mask"][:8]
    forged = m.flatten(1).any(1)
    pgd = {"eps": 8 / 255, "alpha": 2 / 255, "steps": 5}
    # by hand: the same attack (same per-batch generator), and the localizer's misses with and without it
    x_a = quantize(create_attack("pgd", trained_localizer, **pgd)(x, m, generator=seeded_generator(0, 0, 0)), x, 8 / 255)
    with torch.no_grad():
        missed = [(f1_score(torch.sigmoid(trained_localizer(v)), m) <= EVADED_F1)[forged].float().mean().item()
                  for v in (x, x_a)]
    assert 0 < missed[0] < missed[1]  # some clean masks are already missed; the attack misses more
    blind = evaluate_detector(_ConstantDetector(-10.0), trained_localizer, data, [DetectorAttack("pgd", "pgd", pgd)],
                              n_boot=10, threshold=0.5)
    assert [blind["clean"]["evaded"], blind["attacks"]["pgd"]["evaded"]] == pytest.approx(missed)
    flags_all = evaluate_detector(_ConstantDetector(10.0), trained_localizer, data, [DetectorAttack("pgd", "pgd", pgd)],
                                  n_boot=10, threshold=0.5)
    assert flags_all["clean"]["evaded"] == flags_all["attacks"]["pgd"]["evaded"] == 0.0

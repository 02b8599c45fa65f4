"""The stochastic ANSM: its noise stays inside g (the eps_d bound holds), every call draws afresh unless a generator
fixes it, checkpoints keep it, training with it resumes exactly; and the benchmark scores it as the mean over
passes and attacks it only through views that handle randomness (EOT, fixed noise)."""

from __future__ import annotations

import math

import pytest
import torch

from ansm.benchmark.defenses import Defense, stochastic_views
from ansm.defense import TrainANSMConfig, train_ansm
from ansm.defense.ansm_net import ANSM, load_ansm, save_ansm
from ansm.errors import CheckpointError, ConfigError


@pytest.fixture
def frozen_localizer(trained_localizer):
    """The session's localizer without parameter gradients, given back as it was."""
    flags = [p.requires_grad for p in trained_localizer.parameters()]
    for p in trained_localizer.parameters():
        p.requires_grad_(False)
    yield trained_localizer.eval()
    for p, f in zip(trained_localizer.parameters(), flags):
        p.requires_grad_(f)


def _random_ansm(noise_std: float = 0.1) -> ANSM:
    torch.manual_seed(0)
    ansm = ANSM(eps_d=8 / 255, width=4, dilations=[1], noise_std=noise_std)
    for p in ansm.parameters():  # an untrained ANSM is the identity, whatever the noise: give it weights
        torch.nn.init.normal_(p, std=0.5)
    return ansm.eval()


def test_noise_changes_the_perturbation_not_its_bound() -> None:
    ansm, x = _random_ansm(), torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = ansm(x), ansm(x)
    assert not torch.equal(a, b)
    assert (a - x).abs().max() <= 8 / 255 + 1e-6 and (b - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        ansm.noise_generator = torch.Generator().manual_seed(5)
        c = ansm(x)
        ansm.noise_generator = torch.Generator().manual_seed(5)
        assert torch.equal(c, ansm(x))
    deterministic = _random_ansm(0.0)
    with torch.no_grad():
        assert torch.equal(deterministic(x), deterministic(x))
    assert "noise_std" not in deterministic.config  # a deterministic checkpoint is what it always was


def test_checkpoint_keeps_the_noise(tmp_path) -> None:
    ansm = _random_ansm(0.05)
    save_ansm(ansm, tmp_path / "s")
    loaded, meta = load_ansm(tmp_path / "s")
    assert loaded.noise_std == pytest.approx(0.05) and loaded.stochastic and meta["config"]["noise_std"] == 0.05


@pytest.mark.parametrize("value", [-0.1, 2.0, math.nan])
def test_bad_noise_std_is_a_config_error(value) -> None:
    with pytest.raises(ConfigError, match="noise_std"):
        ANSM(noise_std=value)
    with pytest.raises(ConfigError, match="noise_std"):
        TrainANSMConfig(localizer="x", noise_std=value)


def test_stochastic_training_resumes_exactly(tiny_cfg, trained_localizer, tmp_path) -> None:
    cfg = {**tiny_cfg, "noise_std": 0.05, "defended_fraction": 1.0}
    full, _ = train_ansm(TrainANSMConfig(**{**cfg, "out": str(tmp_path / "a")}), trained_localizer)

    def stop(step: int, _stage: int, _loss: float) -> None:
        if step == 2:
            raise KeyboardInterrupt

    out_b = str(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        train_ansm(TrainANSMConfig(**{**cfg, "out": out_b}), trained_localizer, on_step=stop)
    resumed, summary = train_ansm(TrainANSMConfig(**{**cfg, "out": out_b}), trained_localizer)
    assert summary["resumed_from"] == 2 and resumed.stochastic
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="noise_std"):
        train_ansm(TrainANSMConfig(**{**cfg, "out": out_b, "noise_std": 0.1}), trained_localizer)


def test_benchmark_views_and_score_handle_the_randomness(frozen_localizer) -> None:
    trained_localizer = frozen_localizer
    ansm = _random_ansm(0.1)
    d = Defense("ansm-stochastic", "ansm", trained_localizer.eval(), ansm, 0, samples=4, eot_samples=3)
    views = d.attacker_views()
    assert list(views) == ["eot-3", "fixed-noise"]  # no single-draw view: the weak attack randomness fools
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(views["fixed-noise"](x), views["fixed-noise"](x))
        torch.manual_seed(7)
        eot = views["eot-3"](x)
        torch.manual_seed(7)  # the same draws, one by one: EOT is the mean of the draws' logits
        draws = trained_localizer(ansm(x.repeat(3, 1, 1, 1))).view(3, 2, *eot.shape[1:])
        assert torch.allclose(eot, draws.mean(0), atol=1e-5)
        torch.manual_seed(7)
        score = d.logits(x)
        torch.manual_seed(7)
        probs = torch.sigmoid(trained_localizer(ansm(x.repeat(4, 1, 1, 1)))).view(4, 2, *score.shape[1:])
        assert torch.allclose(torch.sigmoid(score), probs.mean(0), atol=1e-4)
    # the views are differentiable: an EOT attacker gets a gradient
    z = x.clone().requires_grad_(True)
    views["eot-3"](z).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert Defense("ansm", "ansm", trained_localizer, _random_ansm(0.0)).attacker_views().keys() == {"white-box"}
    assert list(stochastic_views(ansm, trained_localizer, 20)) == ["eot-20", "fixed-noise"]


def test_defend_averages_a_stochastic_ansm_over_passes(tmp_path, frozen_localizer) -> None:
    """`ansm defend` with a stochastic ANSM: the mask is the mean probability over the passes (recomputed by hand
    from the same draws), the defended image is the first pass and stays inside the bound; a deterministic ANSM
    runs once."""
    from PIL import Image

    from ansm.data.io import read_image
    from ansm.defense.inference import defend_images

    loc = frozen_localizer
    img = (torch.rand(48, 48, 3, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8).numpy()
    Image.fromarray(img).save(tmp_path / "a.png")
    x = read_image(tmp_path / "a.png")[None]
    ansm = _random_ansm(0.1)
    torch.manual_seed(5)
    summary = defend_images(ansm, loc, tmp_path / "a.png", tmp_path / "o", stochastic_passes=4)
    torch.manual_seed(5)  # the same draws, by hand
    with torch.no_grad():
        first = ansm(x)
        prob = (torch.sigmoid(loc(first)) + sum(torch.sigmoid(loc(ansm(x))) for _ in range(3))) / 4
        one = torch.sigmoid(loc(first))
    assert summary["defended_passes"] == 4
    saved = read_image(tmp_path / "o" / "a_mask.png")[:1]
    assert torch.equal(saved, (prob[0] > 0.5).float())
    assert not torch.equal((one[0] > 0.5).float(), (prob[0] > 0.5).float())  # averaging changed the mask
    x_d = read_image(tmp_path / "o" / "a_defended.png")[None]
    assert (x_d - first).abs().max() <= 1 / 255 + 1e-6 and (x_d - x).abs().max() <= 9 / 255
    assert defend_images(_random_ansm(0.0), loc, tmp_path / "a.png", tmp_path / "d")["defended_passes"] == 1
    for bad in (0, -2, 2.5):  # a clear error before anything is written, never a silent 1
        with pytest.raises(ConfigError, match="stochastic_passes must be an integer >= 1"):
            defend_images(ansm, loc, tmp_path / "a.png", tmp_path / f"bad{bad}", stochastic_passes=bad)
        assert not (tmp_path / f"bad{bad}").exists()


def test_draws_are_chunked_for_big_images_with_the_same_mean(monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring a stochastic defense stacks its draws into one batch unless that exceeds DRAW_CHUNK_PIXELS; then it
    runs them in chunks, each with fresh draws, and still averages over all of them."""
    import ansm.benchmark.defenses as defenses

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    sizes: list[int] = []

    def doubled(z: torch.Tensor) -> torch.Tensor:
        sizes.append(z.shape[0])
        return z * 2

    assert torch.allclose(defenses._mean_over_draws(doubled, x, 5), x * 2) and sizes == [10]  # one batch
    monkeypatch.setattr(defenses, "DRAW_CHUNK_PIXELS", 2 * 2 * 32 * 32)  # two draws of the batch per forward
    sizes.clear()
    assert torch.allclose(defenses._mean_over_draws(doubled, x, 5), x * 2) and sizes == [4, 4, 2]
    torch.manual_seed(1)
    noise = defenses._mean_over_draws(torch.randn_like, torch.zeros(1, 3, 64, 64), 5)
    # the mean of 5 independent standard normals has std 1/sqrt(5) = 0.447; chunks reusing a draw would not
    assert abs(noise.std().item() - 5 ** -0.5) < 0.03

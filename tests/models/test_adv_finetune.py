"""PGD adversarial fine-tuning (the model-side baseline of the benchmark) through ``train_localizer``."""

from __future__ import annotations

import pytest
import torch

from ansm.attacks import create_attack
from ansm.errors import ConfigError
from ansm.eval.metrics import f1_score
from ansm.models.registry import load_localizer
from ansm.models.train import TrainLocalizerConfig, adversarial_share, bernoulli_kl, trades_example, train_localizer


def test_adversarial_share_perturbs_only_its_share_within_budget(trained_localizer, synthetic_batch) -> None:
    cfg = TrainLocalizerConfig(adv_eps="8/255", adv_steps=2, adv_fraction=0.25)
    x, m = synthetic_batch["image"][:8], synthetic_batch["mask"][:8]
    out = adversarial_share(trained_localizer, x, m, step=0, cfg=cfg)
    assert torch.equal(out[2:], x[2:])
    assert (out[:2] - x[:2]).abs().max() <= 8 / 255 + 1e-6
    assert (out[:2] - x[:2]).abs().max() > 4 / 255
    assert torch.equal(out, adversarial_share(trained_localizer, x, m, step=0, cfg=cfg))  # seeded per step


def test_adversarial_finetuning_raises_attacked_f1(trained_localizer, trained_localizer_path, synthetic_batch, tmp_path) -> None:
    x, m = synthetic_batch["image"], synthetic_batch["mask"]
    forged = m.flatten(1).any(1)

    def attacked_f1(model: torch.nn.Module) -> float:
        x_a = create_attack("pgd", model, eps=8 / 255, alpha=2 / 255, steps=5)(x, m, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            return f1_score(torch.sigmoid(model(x_a)), m)[forged].mean().item()

    cfg = TrainLocalizerConfig(out=str(tmp_path / "ft"), init=str(trained_localizer_path), size=64, steps=40,
                               batch_size=8, pool=160, warmup=5, lr=2e-3, eval_n=0, adv_eps="8/255", adv_steps=2)
    tuned, summary = train_localizer(cfg)
    assert summary["config"]["init"] == str(trained_localizer_path) and summary["arch"] == "twostream"
    assert load_localizer(tmp_path / "ft" / "localizer").name == "twostream"
    before, after = attacked_f1(trained_localizer), attacked_f1(tuned)
    assert after > before + 0.02, (before, after)  # measured: 0.001 -> 0.032


@pytest.mark.parametrize("kwargs", [{"adv_eps": "x"}, {"adv_steps": 0}, {"adv_fraction": 0.0}])
def test_adversarial_config_errors(kwargs) -> None:
    with pytest.raises(ConfigError):
        TrainLocalizerConfig(**kwargs)


def test_bernoulli_kl_by_hand_and_differentiable_in_both() -> None:
    lp = torch.tensor([[[[2.0, -1.0], [0.0, 3.0]]]], requires_grad=True)
    lq = torch.tensor([[[[1.0, -2.0], [0.5, 3.0]]]], requires_grad=True)
    p, q = torch.sigmoid(lp), torch.sigmoid(lq)
    by_hand = p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))
    kl = bernoulli_kl(lp, lq)
    assert torch.allclose(kl, by_hand, rtol=1e-5)
    assert kl[0, 0, 1, 1].item() == pytest.approx(0.0, abs=1e-7)  # same logits, no divergence
    kl.sum().backward()
    assert lp.grad.abs().sum() > 0 and lq.grad.abs().sum() > 0  # TRADES trains through the clean prediction too


def test_trades_example_stays_in_budget_and_beats_random_noise_on_the_kl(trained_localizer, synthetic_batch) -> None:
    cfg = TrainLocalizerConfig(adv_eps="4/255", adv_steps=3, trades_beta=6.0)
    x = synthetic_batch["image"][:8]
    x_adv = trades_example(trained_localizer, x, step=0, cfg=cfg)
    assert (x_adv - x).abs().max() <= 4 / 255 + 1e-6
    assert torch.equal(x_adv, trades_example(trained_localizer, x, step=0, cfg=cfg))  # seeded per step
    noise = (x + 4 / 255 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).sign()).clamp(0, 1)
    with torch.no_grad():
        clean = trained_localizer(x)
        kl_adv = bernoulli_kl(clean, trained_localizer(x_adv)).mean().item()
        kl_noise = bernoulli_kl(clean, trained_localizer(noise)).mean().item()
    assert kl_adv > 3 * kl_noise, (kl_adv, kl_noise)


def test_trades_finetuning_shrinks_the_divergence_it_is_trained_against(trained_localizer, trained_localizer_path,
                                                                        synthetic_batch, tmp_path) -> None:
    """What TRADES optimises, measured on images it did not train on: the KL between the clean prediction and
    the prediction under a fresh KL-maximising PGD (another seed) falls. (At test scale it does not yet raise
    F1 under PGD: docs/benchmark.md's probes have it at 220 steps of the benchmark's localizer.)"""
    x = synthetic_batch["image"]
    attack = TrainLocalizerConfig(adv_eps="4/255", adv_steps=5, trades_beta=1.0, seed=123)

    def worst_kl(model: torch.nn.Module) -> float:
        x_a = trades_example(model, x, step=0, cfg=attack)
        with torch.no_grad():
            return bernoulli_kl(model(x), model(x_a)).mean().item()

    cfg = TrainLocalizerConfig(out=str(tmp_path / "trades"), init=str(trained_localizer_path), size=64, steps=40,
                               batch_size=8, pool=160, warmup=5, lr=2e-3, eval_n=0, adv_eps="4/255", adv_steps=2,
                               trades_beta=1.0)
    tuned, summary = train_localizer(cfg)
    assert summary["config"]["trades_beta"] == 1.0
    before, after = worst_kl(trained_localizer), worst_kl(tuned)
    m = synthetic_batch["mask"]
    with torch.no_grad():
        clean = [f1_score(torch.sigmoid(v(x)), m)[m.flatten(1).any(1)].mean().item() for v in (trained_localizer, tuned)]
    print(before, after, clean)
    assert after < 0.5 * before, (before, after)
    assert clean[1] > 0.5 * clean[0], clean  # not by giving up: a constant prediction would also have no KL


def test_trades_needs_a_budget() -> None:
    with pytest.raises(ConfigError, match="adv_eps"):
        TrainLocalizerConfig(trades_beta=6.0)
    with pytest.raises(ConfigError, match="trades_beta"):
        TrainLocalizerConfig(adv_eps="4/255", trades_beta=-1.0)

"""Every registered attack: budget, range, effect on F1, objectives, exactness and bookkeeping."""

from __future__ import annotations

import pytest
import torch

from ansm.attacks import PGD, create_attack, get_objective, list_attacks
from ansm.errors import ConfigError, DataError
from ansm.eval.metrics import f1_score

EPS = 8 / 255
L2_EPS = 0.5


def _make(name: str, model, objective: str = "untargeted", **kw):
    """Each attack at a CPU-friendly size; cw-l2 gets an L-inf cap so every attack has a budget to check."""
    defaults = {"pgd-l2": {"eps": L2_EPS, "alpha": 0.1, "steps": 8}, "cw-l2": {"eps": EPS, "steps": 30, "lr": 0.01},
                "fgsm": {"eps": EPS}}
    return create_attack(name, model, objective=objective, **{**defaults.get(name, {"eps": EPS, "steps": 8}), **kw})


def _f1(model, x, m) -> torch.Tensor:
    with torch.no_grad():
        return f1_score(torch.sigmoid(model(x)), m)


def test_registry_names() -> None:
    assert list_attacks() == ["bim", "cw-l2", "fgsm", "mifgsm", "pgd", "pgd-l2", "segpgd"]


@pytest.mark.parametrize("name", list_attacks())
def test_budget_range_and_f1_drop(name: str, attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"], attack_batch["mask"]
    adv = _make(name, attack_localizer)(x, m, generator=torch.Generator().manual_seed(0))
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    if name == "pgd-l2":
        assert delta.norm(dim=1).max() <= L2_EPS + 1e-5
    else:
        assert delta.abs().max() <= EPS + 1e-6
    before, after = _f1(attack_localizer, x, m).mean(), _f1(attack_localizer, adv, m).mean()
    assert after < before - 0.15, f"{name}: F1 {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", list_attacks())
def test_hide_shrinks_predicted_area(name: str, attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"], attack_batch["mask"]
    adv = _make(name, attack_localizer, objective="hide")(x, m, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        area_clean = (attack_localizer(x) > 0).float().mean()
        area_adv = (attack_localizer(adv) > 0).float().mean()
    # One linear step (FGSM) follows the gradient of the JPEG-grid stream, whose quantisation-periodicity features
    # oscillate within the budget; the iterative attacks must halve the area, FGSM must cut it by a quarter. C&W
    # minimises the perturbation once its success test holds, so it stops short of the others: 0.55x measured, 0.6x.
    shrink = {"fgsm": 0.75, "cw-l2": 0.6}.get(name, 0.5)
    assert area_adv < shrink * area_clean, f"{name}: tampered area {area_clean:.4f} -> {area_adv:.4f}"


def test_pgd_single_step_equals_fgsm(attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"], attack_batch["mask"]
    fgsm = create_attack("fgsm", attack_localizer, eps="8/255")(x, m)
    pgd = create_attack("pgd", attack_localizer, eps="8/255", alpha="8/255", steps=1, random_start=False)(x, m)
    assert torch.equal(fgsm, pgd)


def test_cw_smaller_l2_than_pgd_l2_at_similar_success(attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"], attack_batch["mask"]
    obj = get_objective("untargeted")
    pgd = create_attack("pgd-l2", attack_localizer, eps=1.0, alpha=0.2, steps=10)(x, m, generator=torch.Generator().manual_seed(0))
    cw = create_attack("cw-l2", attack_localizer, steps=50)(x, m)
    with torch.no_grad():
        ok_pgd, ok_cw = obj.success(attack_localizer(pgd), m), obj.success(attack_localizer(cw), m)
    assert ok_cw.float().mean() >= ok_pgd.float().mean() - 0.2
    both = ok_pgd & ok_cw
    assert both.any()
    l2 = lambda a: (a - x).flatten(1).norm(dim=1)[both]  # noqa: E731
    assert l2(cw).mean() < 0.6 * l2(pgd).mean()  # measured 0.53x (PGD-L2 spends nearly all of its budget)


def test_restarts_keep_the_best_restart_per_image(attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"], attack_batch["mask"]
    one = create_attack("pgd", attack_localizer, steps=2)(x, m, generator=torch.Generator().manual_seed(3))
    three = create_attack("pgd", attack_localizer, steps=2, restarts=3)(x, m, generator=torch.Generator().manual_seed(3))
    obj = get_objective("untargeted")
    with torch.no_grad():
        assert (obj.gain(attack_localizer(three), m) >= obj.gain(attack_localizer(one), m) - 1e-6).all()


def test_seeded_randomness_is_deterministic(attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"][:2], attack_batch["mask"][:2]
    atk = create_attack("pgd", attack_localizer, steps=1)
    a = atk(x, m, generator=torch.Generator().manual_seed(1))
    b = atk(x, m, generator=torch.Generator().manual_seed(1))
    c = atk(x, m, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.manual_seed(5)
    d = atk(x, m)
    torch.manual_seed(5)
    assert torch.equal(d, atk(x, m))  # no generator: the global seed decides


def test_model_modes_restored_and_grads_untouched(attack_localizer, attack_batch) -> None:
    model = attack_localizer
    modes = {name: mod.training for name, mod in model.named_modules()}
    try:
        model.train()
        model.enc1.eval()  # a mixed state must come back exactly
        expected = {name: mod.training for name, mod in model.named_modules()}
        grads = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
        seen = []
        hook = model.register_forward_pre_hook(lambda mod, inp: seen.append(mod.training))
        create_attack("pgd", model, steps=1)(attack_batch["image"][:1], attack_batch["mask"][:1])
        hook.remove()
        assert seen and not any(seen)  # attacked in eval mode
        assert {name: mod.training for name, mod in model.named_modules()} == expected
        for p, g in zip(model.parameters(), grads):  # only the input was differentiated
            assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    finally:
        for name, mod in model.named_modules():
            mod.training = modes[name]


def test_plain_callable_and_no_mask(attack_localizer, attack_batch) -> None:
    x = attack_batch["image"][:2]
    adv = create_attack("bim", lambda t: attack_localizer(t), steps=2)(x)  # labels = the clean prediction
    assert (adv - x).abs().max() <= EPS + 1e-6 and not torch.equal(adv, x)


def test_errors_are_one_line_config_errors(attack_localizer, attack_batch) -> None:
    x, m = attack_batch["image"][:1], attack_batch["mask"][:1]
    with pytest.raises(ConfigError, match="did you mean pgd"):
        create_attack("pgdd", attack_localizer)
    with pytest.raises(ConfigError, match="eps"):
        create_attack("pgd", attack_localizer, eps="8/0")
    with pytest.raises(ConfigError, match="takes no parameter steps"):
        create_attack("fgsm", attack_localizer, steps=3)
    with pytest.raises(ConfigError, match="objective"):
        create_attack("pgd", attack_localizer, objective="hid")
    with pytest.raises(ConfigError, match="steps"):
        PGD(attack_localizer, steps=0)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        create_attack("fgsm", attack_localizer)(x * 255, m)
    with pytest.raises(DataError, match="mask"):
        create_attack("fgsm", attack_localizer)(x, m[..., :10])
    with pytest.raises(ConfigError, match="differentiable"):
        create_attack("fgsm", lambda t: attack_localizer(t).detach())(x, m)


def test_params_are_recorded(attack_localizer) -> None:
    atk = create_attack("mifgsm", attack_localizer, eps="4/255", decay=0.5, objective="hide")
    assert atk.params() == {"objective": "hide", "eps": 4 / 255, "alpha": 2 / 255, "steps": 10, "decay": 0.5}

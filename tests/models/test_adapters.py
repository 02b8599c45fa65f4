"""Adapters: a foreign model (plain or IMDLBenCo-style) driven through the localizer contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ansm.attacks import create_attack
from ansm.errors import ConfigError
from ansm.models import FeatureTaps, Localizer
from ansm.models.adapters import IMAGENET_MEAN, IMAGENET_STD, probs_to_logits, set_taps, wrap_imdlbenco, wrap_module


class BenCoStyle(nn.Module):
    """Mimics an IMDLBenCo model: keyword inputs, a *required* mask, loss inside forward, dict out,
    ``pred_mask`` probabilities at a quarter of the input resolution."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.neck = nn.Sequential(nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1))
        self.decode = nn.Conv2d(8, 1, 1)
        self.seen: dict[str, torch.Tensor] = {}

    def forward(self, image: torch.Tensor, mask: torch.Tensor, *args: object, **kwargs: object) -> dict:
        self.seen = {"image": image.detach(), "mask": mask.detach()}
        logits = self.decode(self.neck(self.backbone(image)))
        pred = torch.sigmoid(logits)
        small_mask = F.interpolate(mask, size=logits.shape[-2:], mode="nearest")
        loss = F.binary_cross_entropy_with_logits(logits, small_mask)
        return {"backward_loss": loss, "pred_mask": pred, "pred_label": pred.amax(dim=(1, 2, 3)),
                "visual_loss": {"seg": loss}}


class TinyProbs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.body(x))


@pytest.fixture()
def benco() -> BenCoStyle:
    torch.manual_seed(0)
    return BenCoStyle()


def test_imdlbenco_adapter_contract(benco: BenCoStyle) -> None:
    model = wrap_imdlbenco(benco, multiple=8, taps=["backbone.2", "neck"])
    assert isinstance(model, Localizer)
    assert model.input_cfg.mean == IMAGENET_MEAN and model.input_cfg.std == IMAGENET_STD
    assert model.default_taps == ("model.backbone.2", "model.neck")

    x = torch.rand(2, 3, 45, 61, requires_grad=True)
    with FeatureTaps(model, model.default_taps) as taps:
        logits = model(x)
    assert logits.shape == (2, 1, 45, 61)
    assert set(taps.features) == {"model.backbone.2", "model.neck"}
    # Normalised as the model expects, padded to a multiple of 8, and given an all-zero mask.
    seen = benco.seen
    assert seen["image"].shape == (2, 3, 48, 64) and seen["mask"].shape == (2, 1, 48, 64)
    assert torch.count_nonzero(seen["mask"]) == 0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["image"][..., :45, :61], (x.detach() - mean) / std)

    # Logits are logit(clamp(p)) of the model's probabilities, resized bilinearly *on logits*.
    with torch.no_grad():
        probs = benco(image=(F.pad(x.detach(), (0, 3, 0, 3), mode="reflect") - mean) / std,
                      mask=torch.zeros(2, 1, 48, 64))["pred_mask"]
        expected = F.interpolate(probs_to_logits(probs), size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(logits.detach(), expected[..., :45, :61])

    # Gradients reach the input, so gradient attacks work through the adapter.
    F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_wrap_module_probs_equal_sigmoid_of_logits() -> None:
    torch.manual_seed(0)
    inner = TinyProbs()
    model = wrap_module(inner, "probs")
    x = torch.rand(3, 3, 20, 17)
    with torch.no_grad():
        p = inner(x)
        torch.testing.assert_close(torch.sigmoid(model(x)), p.clamp(1e-6, 1 - 1e-6), atol=1e-6, rtol=1e-5)
    logits_model = wrap_module(inner.body, "logits")
    with torch.no_grad():
        torch.testing.assert_close(logits_model(x), inner.body(x))


def test_probs_to_logits_is_finite_at_the_extremes() -> None:
    out = probs_to_logits(torch.tensor([0.0, 1.0, 0.5]))
    assert torch.isfinite(out).all() and out[2] == 0


def test_output_forms_tuple_dict_and_3d() -> None:
    class Multi(nn.Module):
        def __init__(self, form: str) -> None:
            super().__init__()
            self.form = form
            self.conv = nn.Conv2d(3, 1, 1)

        def forward(self, x: torch.Tensor):
            y = self.conv(x)
            return {"tuple": (y, y.mean()), "dict": {"mask": y, "label": y.mean()}, "3d": y[:, 0]}[self.form]

    x = torch.rand(2, 3, 9, 11)
    assert wrap_module(Multi("tuple"))(x).shape == (2, 1, 9, 11)
    assert wrap_module(Multi("dict"), output_key="mask")(x).shape == (2, 1, 9, 11)
    assert wrap_module(Multi("3d"))(x).shape == (2, 1, 9, 11)
    with pytest.raises(ConfigError, match="output_key"):
        wrap_module(Multi("dict"))(x)


def test_bad_outputs_and_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="2 x 2 x 5 x 5|B x 1"):
        wrap_module(nn.Conv2d(3, 2, 1))(torch.rand(2, 3, 5, 5))
    with pytest.raises(ConfigError, match="'logits' or 'probs'"):
        wrap_module(nn.Conv2d(3, 1, 1), "prob")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="std must be > 0"):
        wrap_module(nn.Conv2d(3, 1, 1), std=(0.2, 0.0, 0.2))
    with pytest.raises(ConfigError, match="3 values"):
        wrap_module(nn.Conv2d(3, 1, 1), mean=(0.5, 0.5))
    with pytest.raises(ConfigError, match="nn.Module"):
        wrap_module(lambda x: x)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no 'image' argument"):
        wrap_imdlbenco(nn.Conv2d(3, 1, 1))


def test_unknown_tap_lists_close_matches(benco: BenCoStyle) -> None:
    with pytest.raises(ConfigError, match=r"'backbone\.3'.*Close matches: .*backbone\.2"):
        wrap_imdlbenco(benco, taps=["backbone.3"])
    model = wrap_imdlbenco(benco, taps="model.neck")  # the adapter's own (prefixed) name is accepted too
    assert model.default_taps == ("model.neck",)
    with pytest.raises(ConfigError, match="Close matches"):
        set_taps(model, ["nek"])
    set_taps(model, ["decode"])
    assert model.default_taps == ("model.decode",)


def test_train_eval_mode_reaches_the_wrapped_model(benco: BenCoStyle) -> None:
    model = wrap_imdlbenco(benco)
    model.eval()
    assert not benco.training
    model.train()
    assert benco.training


def test_pgd_through_the_adapter_changes_the_prediction(benco: BenCoStyle) -> None:
    model = wrap_imdlbenco(benco, multiple=4).eval()
    x = torch.rand(2, 3, 32, 32)
    masks = torch.zeros(2, 1, 32, 32)
    masks[..., 8:24, 8:24] = 1
    attack = create_attack("pgd", model, eps="8/255", steps=3)
    x_a = attack(x, masks)
    assert x_a.shape == x.shape and (x_a - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        assert not torch.allclose(model(x_a), model(x))

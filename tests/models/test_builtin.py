"""Built-in localizers: any input size in, logits at input resolution out; named taps; save/load; training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ansm.errors import CheckpointError, ConfigError
from ansm.models import FeatureTaps, create_localizer, load_localizer, save_localizer
from ansm.models.train import TrainLocalizerConfig, train_localizer


@pytest.mark.parametrize("arch", ["twostream", "unet-small"])
@pytest.mark.parametrize("hw", [(257, 383), (31, 17), (64, 64)])
def test_logits_at_input_resolution(arch: str, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = create_localizer(arch).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, *hw))
    assert out.shape == (2, 1, *hw) and torch.isfinite(out).all()


def test_taps_and_gradients_reach_the_input() -> None:
    model = create_localizer("twostream").eval()
    x = torch.rand(1, 3, 40, 56, requires_grad=True)
    with FeatureTaps(model, model.default_taps) as taps:
        logits = model(x)
    assert list(taps.features) == ["enc2", "enc3", "context"]
    assert taps.features["enc2"].shape[-2:] == (10, 14)
    logits.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # no gradient masking in the noise stream
    with pytest.raises(ConfigError, match="enc3"):
        FeatureTaps(model, ["enc4"])


def test_groupnorm_eval_equals_train_mode() -> None:
    """No batch statistics: a forward pass gives the same output in train and eval mode (no BatchNorm trap)."""
    model = create_localizer("twostream")
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        a = model.train()(x)
        b = model.eval()(x)
    assert torch.allclose(a, b, atol=1e-6)


def test_save_load_roundtrip_and_strict_errors(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = create_localizer("twostream", width=8).eval()
    save_localizer(model, tmp_path / "loc")
    again = load_localizer(tmp_path / "loc")
    x = torch.rand(1, 3, 24, 24)
    assert torch.equal(model(x), again(x))
    wrong = create_localizer("unet-small", width=8)
    from ansm.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "bad", wrong.state_dict(), {"kind": "localizer", "arch": "twostream", "config": {"width": 8}})
    with pytest.raises(CheckpointError, match="missing") as err:
        load_localizer(tmp_path / "bad")
    assert len(str(err.value).splitlines()) <= 3


def test_training_resumes_to_identical_weights(tmp_path: Path) -> None:
    cfg = dict(size=32, steps=6, batch_size=4, pool=12, warmup=2, ckpt_every=3, eval_n=0)
    full, _ = train_localizer(TrainLocalizerConfig(out=str(tmp_path / "full"), **cfg))

    class Killed(Exception):
        pass

    def kill_at_step_4(step: int, _loss: float) -> None:
        if step == 4:  # after the step-3 checkpoint, mid-way to the next one
            raise Killed

    with pytest.raises(Killed):
        train_localizer(TrainLocalizerConfig(out=str(tmp_path / "cut"), **cfg), on_step=kill_at_step_4)
    assert not (tmp_path / "cut" / "localizer.safetensors").exists()
    resumed, summary = train_localizer(TrainLocalizerConfig(out=str(tmp_path / "cut"), **cfg))
    assert summary["resumed_from"] == 3
    for (k, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(CheckpointError, match="cannot resume"):
        train_localizer(TrainLocalizerConfig(out=str(tmp_path / "cut"), **{**cfg, "seed": 5}))
    assert [e["cpu_threads"] for e in summary["environments"]] == [torch.get_num_threads()]
    # a resume on another thread count is recorded: the sums split differently, so the run is another run
    with pytest.raises(Killed):
        train_localizer(TrainLocalizerConfig(out=str(tmp_path / "other"), **cfg), on_step=kill_at_step_4)
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        _, summary = train_localizer(TrainLocalizerConfig(out=str(tmp_path / "other"), **cfg))
    finally:
        torch.set_num_threads(threads)
    assert [e["cpu_threads"] for e in summary["environments"]] == [threads, threads + 1]
    assert summary["environments"][0]["torch"] == torch.__version__

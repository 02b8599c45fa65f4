"""MobileNetV2 from the official TFLite file (ImageNet labels), the DeepLabv3 graph (bird IoU), the TFLite reader's
errors, and the mobilenet-unet localizer.

Tests needing the official files read them from ``../shared/weights/mobilenet`` next to the repository (or
``$ANSM_SHARED``, ``$ANSM_MOBILENET_WEIGHTS``) and skip cleanly when absent: those files are never in the repo.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ansm.checkpoint import load_checkpoint
from ansm.errors import CheckpointError, ConfigError
from ansm.models import FeatureTaps, create_localizer, load_localizer, resolve_layers, save_localizer
from ansm.models.mobilenet import (
    MobileNetUNetLocalizer,
    MobileNetV2Classifier,
    MobileNetV2Encoder,
    default_mobilenet_weights,
    read_mobilenet_tflite,
)
from ansm.models.tflite import quant_params, read_tflite, run_tflite, same_pads


def _weights_dir() -> Path:
    try:
        return default_mobilenet_weights().parent
    except ConfigError as exc:
        pytest.skip(f"MobileNet weights not available ({exc})")


def _need(name: str) -> Path:
    path = _weights_dir() / name
    if not path.exists():
        pytest.skip(f"{path} not available (shared weights/data live outside the repository)")
    return path


def _rgb_uint8(path: Path, size: tuple[int, int] | None = None) -> torch.Tensor:
    from PIL import Image

    im = Image.open(path).convert("RGB")
    if size is not None:
        im = im.resize(size, Image.BILINEAR)
    return torch.from_numpy(np.asarray(im).astype(np.float32)).permute(2, 0, 1)[None]


@pytest.fixture(scope="module")
def classifier() -> MobileNetV2Classifier:
    return MobileNetV2Classifier.from_tflite(_need("mobilenet_v2_1.0_224_quant.tflite"))


# PROVENANCE.md: labels and probabilities of the float32 run with dequantised weights.
REFERENCE = {"grace_hopper.bmp": ("military uniform", 0.93), "cat.bmp": ("Egyptian cat", 0.78),
             "parrot.jpg": ("macaw", 0.998)}


def test_reference_labels(classifier: MobileNetV2Classifier) -> None:
    labels = _need("test_images/imagenet_labels.txt").read_text().splitlines()
    assert len(labels) == 1001 and labels[0] == "background"
    scale, zero = quant_params(read_tflite(_need("mobilenet_v2_1.0_224_quant.tflite")), 0)
    batch = torch.cat([(_rgb_uint8(_need(f"test_images/{f}"), (224, 224)) - zero) * scale for f in REFERENCE])
    assert batch.min() >= -1 and batch.max() <= 1
    with torch.inference_mode():
        probs = classifier(batch).softmax(-1)
    for (f, (label, p_ref)), p in zip(REFERENCE.items(), probs):
        i = int(p.argmax())
        print(f"{f}: {labels[i]!r} p={p[i].item():.4f} (reference {label!r} {p_ref})")
        assert labels[i] == label
        assert abs(p[i].item() - p_ref) < 0.03


def test_matches_tflite_graph_and_any_size(classifier: MobileNetV2Classifier) -> None:
    """The module network equals the file's own graph run by the interpreter, and takes odd sizes."""
    graph = read_tflite(_need("mobilenet_v2_1.0_224_quant.tflite"))
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.inference_mode():
        ref = run_tflite(graph, x)[0]
        out = classifier(x).softmax(-1)
        feats = classifier.encoder(x[:1, :, :67, :45])
    assert (out - ref).abs().max().item() < 1e-5
    assert [tuple(f.shape[1:]) for f in feats] == [(16, 34, 23), (24, 17, 12), (32, 9, 6), (96, 5, 3), (320, 3, 2)]


def test_tf_same_padding() -> None:
    assert same_pads(224, 3, 2) == (0, 1)  # even total: the extra pixel goes bottom/right
    assert same_pads(225, 3, 2) == (1, 1)
    assert same_pads(513, 3, 2) == (1, 1)
    assert same_pads(7, 3, 1, 2) == (2, 2)
    assert same_pads(10, 1, 2) == (0, 0)


def test_deeplab_bird_iou() -> None:
    graph = read_tflite(_need("deeplabv3_mnv2_pascal_quant.tflite"))
    scale, zero = quant_params(graph, graph.inputs[0])
    image = _rgb_uint8(_need("test_images/bird_segmentation.bmp"))
    assert image.shape[-2:] == (513, 513)
    from PIL import Image

    mask = np.asarray(Image.open(_need("test_images/bird_segmentation_mask.bmp")))
    with torch.inference_mode():
        seg = run_tflite(graph, (image - zero) * scale)[0][0].numpy()
    assert seg.shape == mask.shape
    pred, gt = seg != 0, mask != 0  # foreground: any non-background class
    iou = (pred & gt).sum() / (pred | gt).sum()
    print(f"bird foreground IoU {iou:.3f}, predicted classes {np.unique(seg).tolist()}")
    assert iou >= 0.88
    assert np.bincount(seg[pred].ravel()).argmax() == 3  # "bird"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


def test_bad_files_raise_one_checkpoint_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError) as e:
        MobileNetV2Encoder().load_tflite(garbage)
    assert "not a TFLite model" in _one_line(e)
    fake = tmp_path / "fake.tflite"  # right identifier, nonsense offsets
    fake.write_bytes(b"\xf0\xff\xff\x7fTFL3" + bytes(range(256)) * 4)
    with pytest.raises(CheckpointError) as e:
        MobileNetV2Encoder().load_tflite(fake)
    assert str(fake) in _one_line(e)
    with pytest.raises(CheckpointError) as e:
        MobileNetV2Encoder().load_tflite(tmp_path / "missing.tflite")
    _one_line(e)


def test_truncated_and_wrong_model(tmp_path: Path) -> None:
    good = _need("mobilenet_v2_1.0_224_quant.tflite")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(good.read_bytes()[: 1_000_000])
    with pytest.raises(CheckpointError) as e:
        read_mobilenet_tflite(cut)
    _one_line(e)
    with pytest.raises(CheckpointError) as e:  # a real TFLite file, but DeepLab, not the classifier
        MobileNetV2Encoder().load_tflite(_need("deeplabv3_mnv2_pascal_quant.tflite"))
    assert "MobileNetV2" in _one_line(e)


def test_default_weights_lookup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANSM_MOBILENET_WEIGHTS", str(tmp_path / "nope.tflite"))
    with pytest.raises(ConfigError, match="ANSM_MOBILENET_WEIGHTS"):
        default_mobilenet_weights()
    f = tmp_path / "mine.tflite"
    f.write_bytes(b"x")
    monkeypatch.setenv("ANSM_MOBILENET_WEIGHTS", str(f))
    assert default_mobilenet_weights() == f


@pytest.mark.parametrize("noise_stream", [True, False])
def test_localizer_any_size_gradients_round_trip(tmp_path: Path, noise_stream: bool) -> None:
    torch.manual_seed(0)
    model = create_localizer("mobilenet-unet", weights=None, width=16, noise_stream=noise_stream)
    assert isinstance(model, MobileNetUNetLocalizer) and not bool(model.backbone_pretrained)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.encoder.parameters())
    model.eval()
    x = torch.rand(2, 3, 67, 45, requires_grad=True)
    with FeatureTaps(model, model.default_taps) as taps:
        out = model(x)
    assert out.shape == (2, 1, 67, 45)
    padded = (96, 64)  # 67x45 padded to multiples of 32
    strides = {"encoder.blocks.5": 8, "context": 16, "up4": 4}
    for n, s in strides.items():
        assert tuple(taps.features[n].shape[-2:]) == (padded[0] // s, padded[1] // s)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    save_localizer(model, tmp_path / "loc")
    _, meta = load_checkpoint(tmp_path / "loc")
    assert meta["config"] == {"width": 16, "noise_stream": noise_stream}
    again = load_localizer(tmp_path / "loc")
    y = torch.rand(1, 3, 50, 71)
    with torch.inference_mode():
        assert torch.equal(model(y), again(y))


def test_localizer_pretrained_encoder(tmp_path: Path) -> None:
    path = _need("mobilenet_v2_1.0_224_quant.tflite")
    model = create_localizer("mobilenet-unet", weights="auto", width=8, noise_stream=False)
    assert bool(model.backbone_pretrained)
    ref = read_mobilenet_tflite(path)
    assert torch.equal(model.encoder.blocks[16].project.weight, ref["encoder.blocks.16.project.weight"])
    save_localizer(model, tmp_path / "loc")
    _, meta = load_checkpoint(tmp_path / "loc")
    assert str(path) not in str(meta)
    again = load_localizer(tmp_path / "loc")
    assert bool(again.backbone_pretrained)
    assert torch.equal(again.encoder.stem[0].weight, model.encoder.stem[0].weight)
    assert set(resolve_layers(again, again.default_taps)) == set(again.default_taps)

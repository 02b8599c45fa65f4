"""Hardening (issue 13, parts 4-5): inputs are read as the user meant them and nothing is lost or mixed.

Part 4 crafts the files a user actually has: masks stored as 0/1, float32 TIFFs in [0, 1], 16-bit images, phone
JPEGs with an EXIF orientation, decompression bombs and truncated files (rules in :mod:`ansm.data.io`)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from ansm.cli import app
from ansm.data.datasets import open_dataset
from ansm.data.io import image_size, pil_to_tensor, read_image, read_mask
from ansm.errors import DataError

runner = CliRunner()


def assert_one_error_line(res, *fragments: str) -> str:
    """Exit 2 and exactly one output line, ``error: ...`` holding the fragments (as tests/test_hardening.py)."""
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert res.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit), res.exception
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]

# ---- 4. inputs read as the user meant -----------------------------------------------------------------------------

ZERO_ONE = np.array([[0, 1, 1, 0]], dtype=np.uint8)


@pytest.mark.parametrize("mode", ["L", "P", "RGB", "LA", "I;16"])
def test_mask_stored_as_0_1_is_binary(tmp_path: Path, mode: str) -> None:
    """A 0/1 mask (every value 0 or 1) marks the 1s tampered instead of reading as all-authentic."""
    img = Image.fromarray(ZERO_ONE.astype(np.uint16)) if mode == "I;16" else Image.fromarray(ZERO_ONE, "L")
    if mode == "P":
        img = img.convert("P")  # greyscale palette: index 1 is the colour (1, 1, 1)
    elif mode in ("RGB", "LA"):
        img = img.convert(mode)
    img.save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png")[0].tolist() == [[0.0, 1.0, 1.0, 0.0]]


def test_0_255_masks_still_thresholded_above_127(tmp_path: Path) -> None:
    noisy = np.array([[0, 2, 127, 128, 250, 255]], dtype=np.uint8)  # a 0/255 mask that went through JPEG
    Image.fromarray(noisy).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png")[0].tolist() == [[0, 0, 0, 1, 1, 1]]
    Image.fromarray(np.array([[0, 255, 0]], dtype=np.uint16)).save(tmp_path / "m16.png")  # 0/255 in 16 bits
    assert read_mask(tmp_path / "m16.png")[0].tolist() == [[0, 1, 0]]


def test_float_images_in_unit_range_kept_and_0_255_scaled(tmp_path: Path) -> None:
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tif")  # mode F, float32 TIFF
    assert torch.allclose(read_image(tmp_path / "unit.tif"), torch.from_numpy(unit).expand(3, 1, 4))
    Image.fromarray(unit * 255).save(tmp_path / "byte.tif")  # float, max above 1: 0..255
    assert torch.allclose(read_image(tmp_path / "byte.tif"), torch.from_numpy(unit).expand(3, 1, 4), atol=1e-6)
    Image.fromarray(np.array([[0.2, 0.7]], dtype=np.float32)).save(tmp_path / "prob.tif")  # a float mask
    assert read_mask(tmp_path / "prob.tif")[0].tolist() == [[0.0, 1.0]]
    Image.fromarray(np.array([[0.0, np.nan]], dtype=np.float32)).save(tmp_path / "nan.tif")
    with pytest.raises(DataError, match="nan.tif: float image holds NaN"):
        read_image(tmp_path / "nan.tif")


def test_16bit_images_scaled_by_bit_depth_not_data_max(tmp_path: Path) -> None:
    """A dark 16-bit photo (max 255 of 65535) stays dark, in every 16-bit mode Pillow hands back."""
    raw = np.array([[0, 255, 32768, 65535]], dtype=np.uint16)
    want = torch.from_numpy(raw.astype(np.float32) / 65535).expand(3, 1, 4)
    Image.fromarray(raw).save(tmp_path / "le.png")  # I;16
    Image.frombytes("I;16B", (4, 1), raw.astype(">u2").tobytes()).save(tmp_path / "be.tif")
    Image.frombytes("I;16L", (4, 1), raw.astype("<u2").tobytes()).save(tmp_path / "l.tif")
    for name in ("le.png", "be.tif", "l.tif"):
        assert torch.allclose(read_image(tmp_path / name), want), name
    dark = Image.fromarray(np.array([[0, 255]], dtype=np.uint16))
    dark.save(tmp_path / "dark.png")
    assert read_image(tmp_path / "dark.png").max().item() == pytest.approx(255 / 65535)
    # mode I from a 16-bit PNG (what older Pillow returns): the file's format says 16 bits
    as_i = Image.open(tmp_path / "le.png").convert("I")
    as_i.format = "PNG"
    assert torch.allclose(pil_to_tensor(as_i), want)
    # a 32-bit integer TIFF has no scale to trust: refused, naming the file
    Image.fromarray(raw).convert("I").save(tmp_path / "i32.tif")
    with pytest.raises(DataError, match="i32.tif: 32-bit integer samples"):
        read_image(tmp_path / "i32.tif")


def _exif_rotated_jpeg(path: Path) -> None:
    """Stored 40x24 (landscape) with EXIF orientation 6: displayed rotated 90 degrees clockwise, 24x40. The bright
    block sits top-left as stored, so top-right as displayed."""
    arr = np.full((24, 40, 3), 30, dtype=np.uint8)
    arr[:8, :12] = 230
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(path, format="JPEG", quality=95, exif=exif)


def test_exif_orientation_applied_to_image_and_mask(tmp_path: Path) -> None:
    _exif_rotated_jpeg(tmp_path / "a.jpg")
    mask = np.zeros((40, 24), dtype=np.uint8)  # drawn on the displayed (portrait) image
    mask[:12, 16:] = 255
    Image.fromarray(mask).save(tmp_path / "a_gt.png")
    assert image_size(tmp_path / "a.jpg") == (24, 40)
    item = open_dataset(tmp_path)[0]  # no size mismatch: the image is read as displayed
    assert item["image"].shape == (3, 40, 24) and item["mask"].shape == (1, 40, 24)
    bright = item["image"].mean(0) > 0.5
    assert torch.equal(bright, item["mask"][0] > 0.5)
    # a mask that carries the photo's EXIF (saved with it, stored unrotated) is rotated the same way
    stored = np.zeros((24, 40), dtype=np.uint8)
    stored[:8, :12] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "b_gt.png", exif=exif)
    assert torch.equal(read_mask(tmp_path / "b_gt.png"), item["mask"])


def test_pixel_limit_and_truncated_files_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(data / "big.png")
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(data / "big_gt.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow refuses above twice this: 32x32 is a "bomb"
    for read in (read_image, read_mask, image_size):
        with pytest.raises(DataError, match="big.png: over Pillow's pixel limit") as err:
            read(data / "big.png")
        assert "--tile" in str(err.value) and "MAX_IMAGE_PIXELS" in str(err.value) and "\n" not in str(err.value)
    res = runner.invoke(app, ["evaluate", "--model", "unet-small", "--data", str(data), "--device", "cpu"])
    assert_one_error_line(res, str(data / "big.png"), "pixel limit")
    monkeypatch.undo()

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    for name, blob in (("cut.jpg", buf.getvalue()[: len(buf.getvalue()) // 2]),
                       ("cut.png", (data / "big.png").read_bytes()[:60])):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(DataError, match=f"{name}: not a readable image"):
            read_image(tmp_path / name)
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="junk.png: not a readable image"):
        image_size(tmp_path / "junk.png")


def test_serve_decodes_uploads_like_read_image(tmp_path: Path) -> None:
    """The web page reads an upload (orientation, float, 16-bit) exactly as the CLI reads the file."""
    from ansm.serve.app import ServeLimits, decode_upload

    unit = np.random.default_rng(0).random((16, 20), dtype=np.float32)
    Image.fromarray(unit).save(tmp_path / "f.tif")
    Image.fromarray((unit * 65535).astype(np.uint16)).save(tmp_path / "s.png")
    _exif_rotated_jpeg(tmp_path / "r.jpg")
    for name in ("f.tif", "s.png", "r.jpg"):
        x, h, w = decode_upload((tmp_path / name).read_bytes(), ServeLimits())
        ref = read_image(tmp_path / name)
        assert (h, w) == tuple(ref.shape[-2:]) and torch.equal(x, ref), name


# ---- 5. nothing lost or mixed -------------------------------------------------------------------------------------

def _photo(path: Path, seed: int, side: int = 24) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (side, side, 3), dtype=np.uint8)).save(path)
    return path


def _forgery(folder: Path, name: str, seed: int) -> None:
    _photo(folder / f"{name}.png", seed, 32)
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[8:20, 8:20] = 255
    Image.fromarray(mask).save(folder / f"{name}_gt.png")


def test_output_ids_unique_only_where_stems_collide() -> None:
    from ansm.defense.inference import output_ids

    files = [Path(n) for n in ("a.png", "a.jpg", "b.png", "C.png", "c.tif", "x.PNG", "x.png")]
    assert output_ids(files) == ["a_png", "a_jpg", "b", "C_png", "c_tif", "x_png", "x_png-2"]


def test_defend_keeps_inputs_sharing_a_stem(tmp_path: Path) -> None:
    from ansm.defense.ansm_net import ANSM, save_ansm

    torch.manual_seed(0)
    save_ansm(ANSM(width=4), tmp_path / "ck" / "ansm", localizer="unet-small")
    _photo(tmp_path / "in" / "a.png", 1)
    _photo(tmp_path / "in" / "a.jpg", 2)
    _photo(tmp_path / "in" / "b.png", 3)
    res = runner.invoke(app, ["defend", "--ansm", str(tmp_path / "ck" / "ansm"), "--input", str(tmp_path / "in"),
                              "--out", str(tmp_path / "out"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "defend.json").read_text())
    assert {(r["id"], Path(r["input"]).name) for r in summary["images"]} == {
        ("a_png", "a.png"), ("a_jpg", "a.jpg"), ("b", "b.png")}
    for stem in ("a_png", "a_jpg", "b"):
        assert (tmp_path / "out" / f"{stem}_defended.png").is_file()
    # each defended image is its own input's, within the defense's budget
    for stem, src in (("a_png", "a.png"), ("a_jpg", "a.jpg")):
        diff = read_image(tmp_path / "out" / f"{stem}_defended.png") - read_image(tmp_path / "in" / src)
        assert diff.abs().max() <= 16 / 255 + 1 / 255, stem
    assert "a_png_defended.png" in " ".join(runner.invoke(app, ["defend", "--help"]).output.split())


def test_evaluate_keeps_datasets_with_the_same_name(tmp_path: Path) -> None:
    _forgery(tmp_path / "x" / "casia", "p", 1)
    _forgery(tmp_path / "y" / "casia", "q", 2)
    _forgery(tmp_path / "y" / "casia", "r", 3)
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--model", "unet-small", "--data", str(tmp_path / "x" / "casia"),
                              "--data", str(tmp_path / "y" / "casia"), "--data", str(tmp_path / "x" / "casia"),
                              "--json", str(out), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert sorted(report["datasets"]) == ["casia", "casia-2"]  # the repeated x/casia is evaluated once
    assert report["sources"] == {"casia": str((tmp_path / "x" / "casia").resolve()),
                                 "casia-2": str((tmp_path / "y" / "casia").resolve())}
    assert report["datasets"]["casia"]["n_images"] == 1 and report["datasets"]["casia-2"]["n_images"] == 2


def test_synth_refuses_a_folder_made_with_other_settings(tmp_path: Path) -> None:
    out = tmp_path / "s"
    base = ["synth", "--out", str(out), "--n", "2", "--size", "32", "--split", "test"]
    assert runner.invoke(app, [*base, "--seed", "0"]).exit_code == 0
    before = {p: p.read_bytes() for p in out.rglob("*.png")}
    assert_one_error_line(runner.invoke(app, [*base, "--seed", "1"]), str(out), "seed 0 -> 1", "new --out")
    res = runner.invoke(app, ["synth", "--out", str(out), "--n", "2", "--size", "48", "--split", "test"])
    assert_one_error_line(res, "config.size 32 -> 48")
    assert_one_error_line(runner.invoke(app, [*base[:4], "1", *base[5:]]), "holds 2 samples")
    assert {p: p.read_bytes() for p in out.rglob("*.png")} == before  # nothing was mixed in
    assert runner.invoke(app, [*base, "--seed", "0"]).exit_code == 0  # the same settings resume
    foreign = tmp_path / "photos"
    _photo(foreign / "holiday.png", 0)
    res = runner.invoke(app, ["synth", "--out", str(foreign), "--n", "2", "--size", "32"])
    assert_one_error_line(res, str(foreign), "no synth.json")


def test_attack_resume_refused_when_the_model_was_retrained(tmp_path: Path) -> None:
    from ansm.models import create_localizer, save_localizer

    ckpt = tmp_path / "loc" / "localizer"
    torch.manual_seed(0)
    save_localizer(create_localizer("unet-small"), ckpt)
    out = tmp_path / "adv"
    args = ["attack", "--data", "synthetic:2", "--size", "32", "--model", str(ckpt), "--out", str(out),
            "--attack", "fgsm", "--eps", "4/255", "--device", "cpu"]
    assert runner.invoke(app, args).exit_code == 0
    settings = json.loads((out / "attack.json").read_text())
    assert len(settings["model_sha256"]) == 64
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "0 attacked" in again.output  # same weights: resumed
    torch.manual_seed(1)
    save_localizer(create_localizer("unet-small"), ckpt)  # "retrained" at the same path
    line = assert_one_error_line(runner.invoke(app, args), str(out), "other weights", "new output folder")
    assert settings["model_sha256"][:12] in line

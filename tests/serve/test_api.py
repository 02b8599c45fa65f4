"""``ansm serve``'s JSON API through Starlette's TestClient (no socket): both masks for a synthetic forgery, the
in-page attack, downscaling to the stated max side, and a 4xx JSON message for every kind of bad upload."""

from __future__ import annotations

import base64
import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

with warnings.catch_warnings():  # Starlette >= 1.x suggests httpx2 for its TestClient; httpx (the issue's) works
    warnings.filterwarnings("ignore", message="Using `httpx`")
    from starlette.testclient import TestClient

from ansm.serve import ServeLimits, create_app
from ansm.data.io import tensor_to_uint8

def png_bytes(image: torch.Tensor) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(tensor_to_uint8(image)).save(buf, format="PNG")
    return buf.getvalue()


def decode(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


@pytest.fixture(scope="module")
def client(trained_localizer: torch.nn.Module, tiny_ansm: torch.nn.Module) -> TestClient:
    limits = ServeLimits(max_side=128, max_bytes=200_000, max_pixels=1_000_000)
    return TestClient(create_app(trained_localizer, tiny_ansm, limits=limits, localizer_name="fixture"))


def test_page_and_info(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "no detector configured" in page.text and 'type="file"' in page.text
    info = client.get("/api/info").json()
    assert info["detector"] is None and info["max_side"] == 128 and info["attacks"] == ["fgsm", "pgd"]


def test_predict_returns_both_masks(client: TestClient, forged_sample: dict, trained_localizer: torch.nn.Module,
                                    tiny_ansm: torch.nn.Module) -> None:
    x = forged_sample["image"]
    r = client.post("/api/predict", content=png_bytes(x))
    assert r.status_code == 200, r.text
    body = r.json()
    clean = body["clean"]
    assert (body["width"], body["height"], body["resized"]) == (96, 96, False)
    for key in ("image", "mask_nodef", "mask_def", "perturbation"):
        assert decode(clean[key]).shape == (96, 96, 3)
    x8 = torch.from_numpy(np.array(Image.open(io.BytesIO(png_bytes(x))))).permute(2, 0, 1).float() / 255
    with torch.no_grad():
        p0 = torch.sigmoid(trained_localizer(x8[None]))
        p1 = torch.sigmoid(trained_localizer(tiny_ansm(x8[None])))
    # the areas are those of the two networks run directly: the page shows the real masks
    assert clean["area_nodef"] == pytest.approx(float((p0 > 0.5).float().mean()), abs=1e-5)
    assert clean["area_def"] == pytest.approx(float((p1 > 0.5).float().mean()), abs=1e-5)
    assert clean["area_nodef"] > 0.02  # the fixture localizer finds the forgery
    # the mask overlay is red exactly where the localizer says "tampered"
    nodef = decode(clean["mask_nodef"]).astype(int)
    red = (nodef[..., 0] - nodef[..., 1] > 60) & (nodef[..., 0] - nodef[..., 2] > 60)
    assert red.mean() == pytest.approx(clean["area_nodef"], abs=0.02)
    # the amplified perturbation is not flat grey, and bounded by eps_d
    pert = decode(clean["perturbation"])
    assert pert.std() > 5 and 0 < clean["max_abs_change"] <= 16 / 255 + 1e-6


def test_attack_in_page_hides_the_forgery(client: TestClient, forged_sample: dict) -> None:
    r = client.post("/api/predict?attack=pgd&eps=8/255&steps=10&objective=hide", content=png_bytes(forged_sample["image"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["attack"]["name"] == "pgd" and body["attack"]["steps"] == 10
    assert 0 < body["attack"]["linf"] <= 8 / 255 + 1e-6
    adv = decode(body["attacked"]["image"]).astype(int)
    src = decode(body["clean"]["image"]).astype(int)
    assert np.abs(adv - src).max() <= 8
    assert body["attacked"]["area_nodef"] < 0.5 * body["clean"]["area_nodef"]  # the mask vanishes (0.096 -> 0.024)
    fgsm = client.post("/api/predict?attack=fgsm&eps=4/255", content=png_bytes(forged_sample["image"])).json()
    assert fgsm["attack"]["steps"] == 1 and fgsm["attack"]["linf"] <= 4 / 255 + 1e-6


def test_large_image_is_downscaled_to_the_stated_side(client: TestClient) -> None:
    img = torch.rand(3, 150, 300, generator=torch.Generator().manual_seed(0))
    body = client.post("/api/predict", content=png_bytes(img)).json()
    assert (body["width"], body["height"], body["resized"]) == (128, 64, True)
    assert (body["original_width"], body["original_height"]) == (300, 150)
    assert decode(body["clean"]["mask_def"]).shape == (64, 128, 3)


def test_16_bit_greyscale_is_rescaled(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 60), 65535 // 2, dtype=np.uint16)).save(buf, format="PNG")  # mode I;16
    body = client.post("/api/predict", content=buf.getvalue()).json()
    assert (body["width"], body["height"]) == (60, 40)
    assert np.abs(decode(body["clean"]["image"]).astype(int) - 128).max() <= 1  # mid-grey, not clipped white


def _bmp_header_only(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, format="BMP")
    return buf.getvalue()[:200]


@pytest.mark.parametrize("body, query, status, words", [
    (b"", "", 400, "empty upload"),
    (b"%PDF-1.4 not a picture at all", "", 415, "not an image"),
    ("truncated", "", 400, "corrupt image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, "", 400, "corrupt image"),
    ("huge_file", "", 413, "upload too large"),
    ("many_pixels", "", 413, "image too large"),
    ("tiny", "", 400, "image too small"),
    ("ok", "attack=cw", 400, "attack must be one of"),
    ("ok", "attack=pgd&eps=nan", 400, "eps"),
    ("ok", "attack=pgd&eps=200/255", 400, "eps must be in"),
    ("ok", "attack=pgd&steps=ten", 400, "steps must be an integer"),
    ("ok", "attack=pgd&steps=500", 400, "steps must be between"),
    ("ok", "objective=maximise", 400, "objective must be one of"),
], ids=["empty", "pdf", "truncated-png", "png-signature-only", "too-many-bytes", "too-many-pixels", "tiny",
        "unknown-attack", "nan-eps", "eps-too-big", "steps-not-int", "too-many-steps", "unknown-objective"])
def test_bad_uploads_are_4xx_json_messages(client: TestClient, forged_sample: dict, body: bytes | str, query: str,
                                           status: int, words: str) -> None:
    good = png_bytes(forged_sample["image"])
    content = {"ok": good, "truncated": good[: len(good) // 2],
               "huge_file": good + b"\x00" * 200_000,                      # over max_bytes (200 kB)
               "many_pixels": _bmp_header_only(2000, 1000),                # 2 MP declared, over max_pixels (1 MP)
               "tiny": png_bytes(torch.zeros(3, 4, 4))}.get(body, body) if isinstance(body, str) else body
    r = client.post(f"/api/predict?{query}", content=content)
    assert r.status_code == status, r.text
    message = r.json()["error"]
    assert words in message and "Traceback" not in message and "\n" not in message


def test_unexpected_failure_is_a_json_500_without_traceback(forged_sample: dict, tiny_ansm: torch.nn.Module) -> None:
    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("boom in the model")

    client = TestClient(create_app(Broken(), tiny_ansm), raise_server_exceptions=False)
    r = client.post("/api/predict", content=png_bytes(forged_sample["image"]))
    assert r.status_code == 500
    assert r.json() == {"error": "internal error (RuntimeError); see the server's log"}

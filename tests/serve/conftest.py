"""Fixtures for ``ansm serve``: a tiny ANSM whose perturbation is not zero (a fresh ANSM's last layer is
zero-initialised, which would make "with ANSM" trivially equal "without"), and a synthetic forged image as PNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ansm.data.io import tensor_to_uint8
from ansm.data.synth import SyntheticForgeries
from ansm.defense.ansm_net import ANSM, save_ansm


@pytest.fixture(scope="session")
def tiny_ansm() -> ANSM:
    torch.manual_seed(0)
    net = ANSM(eps_d="16/255", width=4, dilations=(1,))
    torch.nn.init.normal_(net.tail.weight, std=0.5)
    return net.eval()


@pytest.fixture(scope="session")
def tiny_ansm_path(tiny_ansm: ANSM, trained_localizer_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny_ansm") / "ansm"
    save_ansm(tiny_ansm, path, localizer=str(trained_localizer_path))
    return path


@pytest.fixture(scope="session")
def forged_sample() -> dict[str, torch.Tensor]:
    """One held-out synthetic forgery (96x96) with its mask; rendered here, so no ../shared is needed."""
    item = SyntheticForgeries(1, seed=3, split="test", size=96)[0]
    assert item["mask"].sum() > 0
    return item


@pytest.fixture(scope="session")
def forged_png(forged_sample: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("forged") / "forged.png"
    Image.fromarray(tensor_to_uint8(forged_sample["image"])).save(path)
    return path


@pytest.fixture(scope="session")
def live_server(trained_localizer_path: Path, tiny_ansm_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """``ansm serve`` for real, in a subprocess on a free port (``--port 0``): yields the page's URL."""
    import os
    import subprocess
    import sys
    import time

    log = tmp_path_factory.mktemp("serve_log") / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from ansm.cli import main; main()", "serve", "--ansm", str(tiny_ansm_path),
           "--port", "0", "--max-side", "256", "--device", "cpu"]
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            text = log.read_text()
            for word in text.split():
                if word.startswith("http://127.0.0.1:"):
                    url = word
            if url is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"ansm serve did not start (exit {proc.poll()}):\n{text}")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

"""``ansm serve`` on the command line: one-line errors before anything starts, and a real server that answers."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ansm.cli import app

runner = CliRunner()


def test_help_has_an_example() -> None:
    res = runner.invoke(app, ["serve", "--help"])
    assert res.exit_code == 0
    assert "Example:" in res.output and "ansm serve --model" in res.output and "--max-side" in res.output


@pytest.mark.parametrize("extra, words", [
    (["--port", "70000"], "--port must be between 0 and 65535"),
    (["--max-side", "8"], "--max-side must be between 32 and 4096"),
    (["--max-upload-mb", "0"], "--max-upload-mb must be between 1 and 1024"),
])
def test_bad_options_are_one_line_errors(tmp_path: Path, extra: list[str], words: str) -> None:
    res = runner.invoke(app, ["serve", "--ansm", str(tmp_path / "ansm"), *extra])
    assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output


def test_missing_checkpoint_is_an_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["serve", "--ansm", str(tmp_path / "nope"), "--port", "0"])
    assert res.exit_code == 2 and "error:" in res.output and "nope" in res.output


def test_without_the_serve_extra_the_error_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` meets when it is not installed
    res = runner.invoke(app, ["serve", "--ansm", str(tmp_path / "ansm")])
    assert res.exit_code == 2 and "uvicorn is missing" in res.output and 'pip install -e ".[serve]"' in res.output


def test_port_in_use_is_an_error(tiny_ansm_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["serve", "--ansm", str(tiny_ansm_path), "--port", str(port)])
    assert res.exit_code == 2 and f"--port {port}: cannot listen" in res.output


def test_real_server_answers_on_loopback(live_server: str, forged_png: Path) -> None:
    assert live_server.startswith("http://127.0.0.1:")
    with urllib.request.urlopen(live_server + "api/info", timeout=30) as r:
        info = json.load(r)
    assert info["max_side"] == 256 and info["detector"] is None and info["localizer"].endswith("localizer")
    req = urllib.request.Request(live_server + "api/predict", data=forged_png.read_bytes(), method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.load(r)
    assert body["clean"]["mask_nodef"].startswith("data:image/png") and body["clean"]["mask_def"].startswith("data:image/png")
    bad = urllib.request.Request(live_server + "api/predict", data=b"not an image", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(bad, timeout=30)
    assert err.value.code == 415 and "not an image" in json.load(err.value)["error"]

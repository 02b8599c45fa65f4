"""The CLI as a user meets it: help with examples, one-line errors, synth -> evaluate end to end."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ansm.cli import app

runner = CliRunner()


def test_every_command_has_help_with_an_example() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    names = [c.name for c in app.registered_commands]
    assert {"synth", "train-localizer", "evaluate", "attack"} <= set(names)
    for name in names:
        sub = runner.invoke(app, [name, "--help"])
        assert sub.exit_code == 0 and "Example:" in sub.output and f"ansm {name}" in sub.output, name


def test_synth_then_evaluate_writes_json(tmp_path: Path, trained_localizer_path: Path) -> None:
    data = tmp_path / "synth"
    res = runner.invoke(app, ["synth", "--out", str(data), "--n", "10", "--split", "test", "--size", "64"])
    assert res.exit_code == 0, res.output
    assert (data / "synth.json").is_file() and len(list(data.glob("*_gt.png"))) >= 5
    out = tmp_path / "eval.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained_localizer_path), "--data", str(data),
                              "--data", "synthetic:4", "--size", "64", "--json", str(out)])
    assert res.exit_code == 0, res.output
    numbers = json.loads(out.read_text())["datasets"]
    assert set(numbers) == {"synth", "synthetic:4"}
    assert numbers["synth"]["n_images"] == 10 and 0.0 <= numbers["synth"]["f1"] <= 1.0
    # the table printed to a log (not a terminal) keeps whole numbers, not Rich's 80-column "0.4…"
    assert f"{numbers['synth']['pixel_auc']:.3f}" in res.output and "…" not in res.output


@pytest.mark.parametrize("args, message", [
    (["synth", "--out", "x", "--split", "dev"], "--split must be train, val or test"),
    (["evaluate", "--model", "no-such-model", "--data", "synthetic:2"], "no-such-model"),
    (["evaluate", "--model", "twostream", "--data", "/nonexistent"], "not found"),
    (["train-localizer", "--steps", "0"], "steps must be >= 1"),
    (["train-localizer", "--trades", "1"], "needs an adversarial budget"),
    (["benchmark", "--set", "advft_trades=-1"], "advft_trades"),
    (["benchmark", "--preset", "huge"], "unknown preset"),
    (["benchmark", "--set", "adaptive_steps"], "write key=value"),
    (["benchmark", "--defenses", "ansm,jpeg"], "include 'none'"),
    (["benchmark", "--data", "/nonexistent", "--model", "twostream", "--defenses", "none"], "not found"),
])
def test_bad_input_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 2


def test_train_localizer_prints_time_and_heldout_f1(tmp_path: Path) -> None:
    res = runner.invoke(app, ["train-localizer", "--out", str(tmp_path / "loc"), "--steps", "3", "--size", "32",
                              "--batch-size", "2", "--pool", "4", "--eval-n", "4"])
    assert res.exit_code == 0, res.output
    assert "held-out synthetic" in res.output and "F1@0.5" in res.output and " s " in res.output
    assert (tmp_path / "loc" / "localizer.safetensors").is_file()
    assert json.loads((tmp_path / "loc" / "summary.json").read_text())["heldout"]["n_images"] == 4


def test_a_log_that_is_not_a_terminal_gets_progress_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In a cluster job's log (stderr not a terminal) the bar becomes plain lines, so an hour-long job is not
    silent until it ends: here every update is due (ANSM_LOG_EVERY=0), and a finished task says 100%."""
    monkeypatch.setenv("ANSM_LOG_EVERY", "0")
    monkeypatch.delenv("ANSM_PROGRESS", raising=False)
    res = runner.invoke(app, ["train-localizer", "--out", str(tmp_path / "loc"), "--steps", "3", "--size", "32",
                              "--batch-size", "2", "--pool", "4", "--eval-n", "0"])
    assert res.exit_code == 0, res.output
    assert "rendering data: 4/4 (100%)" in res.output and "/3 (100%)" in res.output and "elapsed" in res.output
    monkeypatch.setenv("ANSM_LOG_EVERY", "soon")
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--n", "2"])
    assert res.exit_code == 2 and res.output.strip() == "error: ANSM_LOG_EVERY must be a number of seconds >= 0, got 'soon'"


def test_progress_lines_are_throttled_and_say_what_is_left() -> None:
    from ansm.cli.app import LineProgress

    now = [0.0]
    bar = LineProgress(every=60)
    bar.clock = lambda: now[0]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        task = bar.add_task("training", total=100)
        for step in range(1, 101):
            now[0] = step * 2.0  # 2 s a step: a line at 60 s, 120 s, ... and one at the end
            bar.update(task, completed=step, description=f"training loss {1 / step:.3f}")
        bar.advance(task)  # past the end: nothing more
    lines = err.getvalue().splitlines()
    assert len(lines) == 4, lines  # 60, 120, 180 s and done at 200 s
    assert lines[0] == "training loss 0.033: 30/100 (30%), 0:01:00 elapsed, ~0:02:20 left"
    assert lines[-1].startswith("training loss 0.010: 100/100 (100%), 0:03:20 elapsed") and "left" not in lines[-1]


def test_progress_left_is_paced_by_this_run_not_by_resumed_items() -> None:
    """A job killed at 90 of 100 items and resumed: the 90 arrive at once and must not make the last 10 look
    instant (they take 10 s each here: ~1:30 left after the first, not ~0:00)."""
    from ansm.cli.app import LineProgress

    now = [0.0]
    bar = LineProgress(every=5)
    bar.clock = lambda: now[0]
    with contextlib.redirect_stderr(io.StringIO()) as err:
        task = bar.add_task("scoring", total=100)
        bar.update(task, advance=90, resumed=True)
        now[0] = 10.0
        bar.advance(task)
    line = err.getvalue().splitlines()[-1]
    assert line == "scoring: 91/100 (91%) (90 resumed), 0:00:10 elapsed, ~0:01:30 left", line


def test_evaluate_over_all_shared_data(shared_dir: Path, trained_localizer_path: Path, tmp_path: Path) -> None:
    """Real JPEG/PNG forgeries of mixed sizes, at native resolution, one row per dataset."""
    out = tmp_path / "shared.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained_localizer_path), "--data", str(shared_dir / "data"),
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    numbers = json.loads(out.read_text())["datasets"]
    assert {"casia1", "imd2020", "comofod"} <= set(numbers)
    assert numbers["casia1"]["n_images"] == 50 and numbers["casia1"]["n_forged"] == 40
    for name in ("casia1", "imd2020", "comofod"):
        assert name in res.output

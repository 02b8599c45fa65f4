"""The one lookup of ``shared/`` (real corpus, test subset, weights): order, the names reports give, no repeats."""

from __future__ import annotations

from pathlib import Path

import pytest

import ansm.utils
from ansm.demo import _shared_root
from ansm.eval.protocols import default_real_root
from ansm.utils import shared_locations


def test_order_names_and_no_repeats(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "repo").mkdir(parents=True)
    monkeypatch.setattr(ansm.utils, "CHECKOUT", work / "repo")
    monkeypatch.chdir(work / "repo")
    monkeypatch.setenv("ANSM_SHARED", str(tmp_path / "mine"))
    assert shared_locations("real") == [(tmp_path / "mine" / "real", "$ANSM_SHARED/real"),
                                        (work / "shared" / "real", "../shared/real")]  # cwd and checkout agree
    elsewhere = tmp_path / "elsewhere" / "cwd"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("ANSM_SHARED")
    assert [p for p, _ in shared_locations("weights", "x.th")] == [
        tmp_path / "elsewhere" / "shared" / "weights" / "x.th", work / "shared" / "weights" / "x.th"]


def test_defaults_take_the_first_folder_that_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(ansm.utils, "CHECKOUT", tmp_path / "repo")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    monkeypatch.setenv("ANSM_SHARED", str(tmp_path / "mine"))
    assert default_real_root() is None and _shared_root("auto") is None
    (tmp_path / "shared" / "real").mkdir(parents=True)
    (tmp_path / "shared" / "data").mkdir()
    assert default_real_root() == tmp_path / "shared" / "real"
    assert _shared_root("auto") == (tmp_path / "shared" / "data", "../shared/data")
    (tmp_path / "mine" / "data").mkdir(parents=True)  # $ANSM_SHARED wins over ../shared
    assert _shared_root("auto") == (tmp_path / "mine" / "data", "$ANSM_SHARED/data")

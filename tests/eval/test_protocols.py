"""The named real protocol: datasets, splits and mask conventions as one table, on a tiny folder of the same layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ansm.cli import app
from ansm.errors import DataError
from ansm.eval.protocols import protocol_datasets

runner = CliRunner()


def _pairs(folder: Path, names: list[str], size=(40, 24)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        Image.fromarray(np.full((*size[::-1], 3), 90, np.uint8)).save(folder / f"{n}.png")
        m = np.zeros(size[::-1], np.uint8)
        m[4:12, 6:20] = 255
        Image.fromarray(m).save(folder / f"{n}_gt.png")


def _real_root(root: Path) -> Path:
    _pairs(root / "casia1", ["tr0", "te0", "te1"])
    (root / "casia1" / "authentic").mkdir()
    Image.fromarray(np.full((24, 40, 3), 90, np.uint8)).save(root / "casia1" / "authentic" / "au0.png")
    (root / "casia1" / "splits.json").write_text(json.dumps({"train": ["tr0"], "val": [], "test": ["te0", "te1", "au0"]}))
    _pairs(root / "comofod", ["c0"], size=(70, 50))
    return root


def test_protocol_lists_present_datasets_with_split_and_convention(tmp_path: Path) -> None:
    datasets, conventions = protocol_datasets("real", _real_root(tmp_path))
    assert list(datasets) == ["casia1:test", "comofod"]  # the others are absent from this copy: left out
    assert [r.name for r in datasets["casia1:test"].records] == ["te0", "te1", "au0"]  # never the train image
    assert "source and target" in conventions["comofod"]
    with pytest.raises(DataError, match="none of the 'real' protocol"):
        protocol_datasets("real", tmp_path / "casia1")


def test_evaluate_protocol_real_writes_the_per_dataset_table(tmp_path: Path, trained_localizer_path: Path) -> None:
    root = _real_root(tmp_path / "real")
    out = tmp_path / "real.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained_localizer_path), "--protocol", "real",
                              "--data", str(root), "--json", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["protocol"] == "real" and doc["splits"] == {"casia1:test": "test", "comofod": None}
    casia = doc["datasets"]["casia1:test"]
    assert casia["n_images"] == 3 and casia["n_forged"] == 2
    assert 0 <= casia["authentic_fp_rate"] <= 1 and 0 <= casia["image_auc"] <= 1
    assert doc["datasets"]["comofod"]["n_images"] == 1  # native size 70x50, not resized
    assert "source and target" in doc["mask_conventions"]["comofod"]
    bad = runner.invoke(app, ["evaluate", "--model", str(trained_localizer_path), "--protocol", "real",
                              "--data", str(root), "--split", "val"])
    assert bad.exit_code != 0 and "--protocol fixes" in bad.output

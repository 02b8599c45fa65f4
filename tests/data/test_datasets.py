"""Dataset layouts: pairs folder, Tp/Gt, IMDLBenCo JSON (no escaping the root), folders of datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ansm.data.datasets import discover_datasets, open_data, open_dataset
from ansm.errors import DataError


def _pair(folder: Path, name: str, size=(12, 8), mask_name: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(folder / f"{name}.png")
    m = np.zeros(size[::-1], dtype=np.uint8)
    m[:2, :3] = 255
    Image.fromarray(m).save(folder / (mask_name or f"{name}_gt.png"))


def test_pairs_folder_with_authentic(tmp_path: Path) -> None:
    _pair(tmp_path, "b")
    _pair(tmp_path, "a")
    (tmp_path / "authentic").mkdir()
    Image.new("RGB", (5, 4)).save(tmp_path / "authentic" / "c.jpg")
    ds = open_dataset(tmp_path)
    assert [ds[i]["name"] for i in range(len(ds))] == ["a", "b", "c"]
    assert ds[0]["mask"].sum() == 6 and ds[0]["label"] == 1
    assert ds[2]["mask"].shape == (1, 4, 5) and ds[2]["label"] == 0


def test_tp_gt_pairs_by_name_not_order(tmp_path: Path) -> None:
    _pair(tmp_path / "Tp", "x", mask_name="x_tmp.png")
    _pair(tmp_path / "Tp", "y", mask_name="y_tmp.png")
    (tmp_path / "Gt").mkdir()
    for n in ("x", "y"):
        (tmp_path / "Tp" / f"{n}_tmp.png").rename(tmp_path / "Gt" / f"{n}_mask.png")
    ds = open_dataset(tmp_path)
    assert [r.mask.name for r in ds.records] == ["x_mask.png", "y_mask.png"]
    (tmp_path / "Gt" / "x_mask.png").unlink()
    with pytest.raises(DataError, match="x.png: no mask"):
        open_dataset(tmp_path)


def test_imdlbenco_json_and_root_escape(tmp_path: Path) -> None:
    _pair(tmp_path / "imgs", "p")
    manifest = tmp_path / "list.json"
    manifest.write_text(json.dumps([["imgs/p.png", "imgs/p_gt.png"], ["imgs/p.png", "Negative"]]))
    with pytest.raises(DataError, match="duplicate image ids"):
        open_dataset(manifest)
    manifest.write_text(json.dumps([["imgs/p.png", "imgs/p_gt.png"]]))
    assert open_dataset(manifest)[0]["mask"].sum() == 6
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps([["../../etc/passwd", "Negative"]]))
    with pytest.raises(DataError, match="escapes the dataset root"):
        open_dataset(evil)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"not": "a list"}))
    with pytest.raises(DataError, match="expected a JSON list"):
        open_dataset(bad)


def test_max_side_is_explicit_and_keeps_aspect(tmp_path: Path) -> None:
    _pair(tmp_path, "big", size=(64, 32))
    assert open_dataset(tmp_path)[0]["image"].shape == (3, 32, 64)  # native by default
    item = open_dataset(tmp_path, max_side=16)[0]
    assert item["image"].shape == (3, 8, 16) and item["mask"].shape == (1, 8, 16)
    assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}


def test_discover_and_synthetic_spec(tmp_path: Path) -> None:
    _pair(tmp_path / "one", "a")
    _pair(tmp_path / "two", "b")
    assert sorted(discover_datasets(tmp_path)) == ["one", "two"]
    assert len(open_data("synthetic:3", size=32)) == 3
    with pytest.raises(DataError, match="synthetic:N"):
        open_data("synthetic:many")
    with pytest.raises(DataError, match="not found"):
        open_dataset(tmp_path / "nope")


def test_shared_data_loads_every_dataset(shared_dir: Path) -> None:
    found = discover_datasets(shared_dir / "data")
    assert {"casia1", "imd2020", "comofod"} <= set(found)
    for name, ds in found.items():
        for i in range(len(ds)):
            item = ds[i]
            assert item["image"].shape[-2:] == item["mask"].shape[-2:], (name, item["name"])
            assert 0.0 <= float(item["image"].min()) and float(item["image"].max()) <= 1.0

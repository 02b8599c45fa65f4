"""Dataset layouts: pairs folder, Tp/Gt, IMDLBenCo JSON (no escaping the root), folders of datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
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
    # the val split (where recipes are chosen) is other photos than the default test split
    val, test = open_data("synthetic:2:val", size=32), open_data("synthetic:2", size=32)
    assert not torch.equal(val[0]["image"], test[0]["image"])
    with pytest.raises(DataError, match="must be val or test"):
        open_data("synthetic:2:train")
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


def _split_folder(root: Path) -> Path:
    ds = root / "casia"
    for n in ("f1", "f2", "f3"):
        _pair(ds, n)
    (ds / "authentic").mkdir()
    Image.new("RGB", (5, 4)).save(ds / "authentic" / "a1.jpg")
    splits = {"train": ["f1", "a1"], "val": ["f2"], "test": ["f3", "missing_in_this_copy"]}
    (ds / "splits.json").write_text(json.dumps(splits))
    _pair(root / "other", "o1")  # no splits.json: used whole
    return ds


def test_split_reader_keeps_one_split(tmp_path: Path) -> None:
    ds_dir = _split_folder(tmp_path)
    assert [r.name for r in open_dataset(ds_dir, split="train").records] == ["f1", "a1"]
    assert [r.name for r in open_dataset(ds_dir, split="test").records] == ["f3"]  # partial copies are fine
    found = discover_datasets(tmp_path, split="val")
    assert [r.name for r in found["casia"].records] == ["f2"] and found["casia"].split == "val"
    assert len(found["other"]) == 1 and found["other"].split is None


def test_split_reader_refuses_overlap_unknown_and_missing(tmp_path: Path) -> None:
    ds_dir = _split_folder(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        open_dataset(ds_dir, split="dev")
    with pytest.raises(DataError, match="no splits.json"):
        open_dataset(tmp_path / "other", split="test")
    (ds_dir / "splits.json").write_text(json.dumps({"train": ["f1"], "val": ["f1"], "test": []}))
    with pytest.raises(DataError, match="both train and val"):
        open_dataset(ds_dir, split="train")
    (ds_dir / "splits.json").write_text(json.dumps({"train": ["zz"], "val": [], "test": []}))
    with pytest.raises(DataError, match="none of its images"):
        open_dataset(ds_dir, split="train")


def test_real_casia1_split_is_disjoint_by_source_photo() -> None:
    from ansm.data.datasets import read_split
    from ansm.eval.protocols import default_real_root

    real = default_real_root()
    root = real / "casia1" if real else None
    if root is None or not (root / "splits.json").is_file():
        pytest.skip("../shared/real/casia1/splits.json absent")
    import re

    def photos(ids: set[str]) -> set[str]:
        out = set()
        for i in ids:
            m = re.match(r"Au_([a-z]+)_(\d+)$", i)
            out |= {m.group(1) + m.group(2)} if m else set(re.findall(r"[a-z]{3}\d{4,5}", i))
        return out

    sets = {s: read_split(root, s) for s in ("train", "val", "test")}
    assert [len(open_dataset(root, split=s)) for s in sets] == [626 + 539, 129 + 93, 164 + 138]
    p = {s: photos(ids) for s, ids in sets.items()}
    assert not (p["train"] & p["test"]) and not (p["train"] & p["val"]) and not (p["val"] & p["test"])

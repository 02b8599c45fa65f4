"""The anti-forensics dataset builder: resumable, shardable, byte-identical, readable back as a dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ansm.attacks import create_attack
from ansm.attacks.builder import build_adversarial_dataset, image_seed, parse_shard, quantize
from ansm.data.datasets import open_dataset
from ansm.data.synth import SyntheticForgeries
from ansm.errors import ConfigError

N = 7


@pytest.fixture(scope="module")
def dataset() -> SyntheticForgeries:
    return SyntheticForgeries(N, seed=0, split="test", size=48)


def _attack(model):
    return create_attack("pgd", model, eps="8/255", steps=2)  # random start: exercises per-image seeds


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, dataset, attack_localizer) -> Path:
    out = tmp_path_factory.mktemp("ref")
    result = build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), out, seed=3)
    assert result.n_attacked == N and result.manifest == out / "manifest.jsonl"
    return out


def test_outputs_manifest_and_budget(reference: Path, dataset) -> None:
    rows = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == sorted(dataset[i]["name"] for i in range(N))
    for r in rows:
        assert (reference / r["image"]).is_file()
        assert r["linf"] <= 8 / 255 + 1e-6 and r["l2"] > 0 and r["psnr"] > 30 and 0 < r["ssim"] <= 1
        assert r["attack"] == "pgd" and r["params"]["steps"] == 2 and r["seed"] == image_seed(3, r["id"])
        assert (r["mask"] is None) == (r["label"] == 0)
    assert any(r["f1_after"] < r["f1_before"] for r in rows)
    # the output is itself a dataset in the pairs layout, with the source masks
    back = open_dataset(reference)
    assert len(back) == N
    by_name = {dataset[i]["name"]: dataset[i] for i in range(N)}
    for i in range(N):
        item = back[i]
        assert torch.equal(item["mask"], by_name[item["name"]]["mask"])
        assert (item["image"] - by_name[item["name"]]["image"]).abs().max() <= 8 / 255 + 1e-6


def test_interrupted_run_resumes_to_identical_bytes(tmp_path: Path, reference: Path, dataset, attack_localizer) -> None:
    class Killed(Exception):
        pass

    def die_after_three(_id: str, attacked: bool) -> None:
        if attacked and len(list((tmp_path / "records").glob("*.json"))) == 3:
            raise Killed

    with pytest.raises(Killed):
        build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), tmp_path, seed=3,
                                  on_item=die_after_three)
    assert not (tmp_path / "manifest.jsonl").exists()
    # a kill between writing an image and its record: the image exists, the record does not
    last = sorted((tmp_path / "records").glob("*.json"))[-1]
    last.unlink()
    # and a kill before the image was renamed into place: only the mask exists
    any_png = next(p for p in sorted(tmp_path.glob("*.png")) if not p.stem.endswith("_gt"))
    any_png.unlink()
    (tmp_path / "records" / f"{any_png.stem}.json").unlink(missing_ok=True)

    seen: list[tuple[str, bool]] = []
    result = build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), tmp_path, seed=3,
                                       on_item=lambda i, a: seen.append((i, a)))
    assert result.n_skipped == sum(not a for _, a in seen) >= 1
    assert result.n_attacked + result.n_skipped == N
    assert _files(tmp_path) == _files(reference)


def test_shards_merge_to_the_same_manifest(tmp_path: Path, reference: Path, dataset, attack_localizer) -> None:
    for k in (2, 0):
        r = build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), tmp_path, seed=3, shard=f"{k}/3")
        assert r.manifest is None and r.n_shard == len(range(k, N, 3))
    r = build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), tmp_path, seed=3, shard=(1, 3))
    assert r.manifest is not None
    assert _files(tmp_path) == _files(reference)


def test_batched_build_matches_one_at_a_time(tmp_path: Path, reference: Path, dataset, attack_localizer) -> None:
    """Attacking 3 images at a time gives each image the random start it gets alone (its own seed): the saved
    pixels agree with the one-at-a-time reference up to a rare rounding flip inside the model."""
    from ansm.data.io import read_image

    out = tmp_path / "batched"
    result = build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), out, seed=3, batch_size=3)
    assert result.n_attacked == N
    ref_rows = [json.loads(line) for line in (reference / "manifest.jsonl").read_text().splitlines()]
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in ref_rows] and [r["seed"] for r in rows] == [r["seed"] for r in ref_rows]
    for row, ref in zip(rows, ref_rows):
        a, b = read_image(out / row["image"]), read_image(reference / ref["image"])
        assert (a - b).abs().max() <= 16 / 255 + 1e-6  # inside one budget of each other
        assert ((a - b).abs() > 1e-6).float().mean() < 0.01, row["id"]
        assert row["linf"] <= 8 / 255 + 1e-6
    with pytest.raises(ConfigError, match="batch_size"):
        build_adversarial_dataset(dataset, attack_localizer, _attack(attack_localizer), tmp_path / "x", batch_size=0)


def test_per_image_generators_give_the_single_image_start(attack_localizer) -> None:
    atk = _attack(attack_localizer)
    x = torch.rand(3, 3, 16, 16)
    together = atk.random_init(x, [torch.Generator().manual_seed(s) for s in (1, 2, 3)])
    alone = torch.cat([atk.random_init(x[i:i + 1], torch.Generator().manual_seed(s)) for i, s in enumerate((1, 2, 3))])
    assert torch.equal(together, alone)
    with pytest.raises(ConfigError, match="one per image"):
        atk(x, generator=[torch.Generator()])


def test_changed_settings_are_refused(reference: Path, dataset, attack_localizer) -> None:
    with pytest.raises(ConfigError, match="different settings.*params"):
        build_adversarial_dataset(dataset, attack_localizer, create_attack("pgd", attack_localizer, steps=3), reference, seed=3)


def test_parse_shard_and_quantize() -> None:
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) == (0, 1)
    for bad in ("4/4", "x", "1/0", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    x = torch.full((3, 2, 2), 100 / 255)
    q = quantize(x + 0.03, x, 0.03)  # 0.03 = 7.65/255: plain rounding would give 108/255 > eps
    assert (q - x).abs().max() <= 0.03 and torch.equal(q * 255, (q * 255).round())

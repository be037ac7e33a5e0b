"""`vidact export`: checkpoint -> LeRobot pretrained_model/ bundle with EMA weights and stats inside."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vidact.checkpoint_files import CheckpointWarning, newest_checkpoint
from vidact.cli import main
from vidact.export.consolidate import consolidate, find_checkpoint


def test_bundle_layout_and_config(bundle):
    assert sorted(p.name for p in bundle.iterdir()) == ["config.json", "model.safetensors", "policy_postprocessor.json",
                                                       "policy_preprocessor.json", "vidact_policy.json"]
    config = json.loads((bundle / "config.json").read_text())
    assert config["type"] == "vidact"
    assert config["vidact"]["chunk_length"] == 4 and config["vidact"]["action_dim"] == 2
    assert config["input_features"]["observation.image"]["shape"] == [1, 16, 16]
    assert config["output_features"]["action"]["shape"] == [2]
    assert config["sampler"]["steps"] == 10 and config["mode"] == "policy_fast"
    info = json.loads((bundle / "vidact_policy.json").read_text())
    assert info["action"]["dim"] == 2 and info["action"]["bounds"] is None  # generated data: no min/max
    assert info["cameras"]["keys"] == ["observation.image"] and info["cameras"]["model_size"] == [16, 16]
    assert info["text_encoder"]["kind"] == "tiny_t5" and info["source"]["ema"] is True


def test_weights_are_the_ema_and_stats_travel(bundle, trained_run):
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)
    weights = load_file(str(bundle / "model.safetensors"))
    assert set(weights) == set(ckpt["state_dict"])  # "model.<name>": LeRobot's wrapper holds the net as .model
    ema = ckpt["ema_state_dict"]
    assert ema, "the training run should have saved an EMA"
    moved = 0
    for name, value in ema.items():
        assert torch.equal(weights["model." + name], value), name
        moved += not torch.equal(value, ckpt["state_dict"]["model." + name])
    assert moved > 0, "EMA equal to the raw weights everywhere: the test could not tell them apart"
    for buf in ("normalizer.action_offset", "normalizer.action_scale", "normalizer.has_stats"):
        assert torch.equal(weights["model." + buf], ckpt["state_dict"]["model." + buf])


def test_no_ema_exports_raw_weights(trained_run):
    merged = consolidate(trained_run, prefer_ema=False)
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=False)
    name = next(iter(ckpt["ema_state_dict"]))
    assert torch.equal(merged.state_dict[name], ckpt["state_dict"]["model." + name]) and not merged.used_ema


def test_run_dir_picks_newest_good_checkpoint(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run, symlinks=True)
    folder = run / "checkpoints"
    newest = folder / os.readlink(folder / "last.ckpt")  # the run's final step checkpoint
    assert find_checkpoint(run) == newest == newest_checkpoint(folder)  # the search resume=auto does
    (folder / "step=9.ckpt").write_bytes(newest.read_bytes())  # another name, a newer file: after step files
    broken = folder / "step-00000009.ckpt"  # the largest step, but truncated (a killed job)
    broken.write_bytes(newest.read_bytes()[:1000])
    with pytest.warns(CheckpointWarning, match="step-00000009.ckpt is unreadable"):
        assert find_checkpoint(run) == newest


def test_export_refuses_to_overwrite_and_bad_paths(bundle, tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing"), str(tmp_path / "out")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    run = tmp_path / "empty_run"
    (run / "checkpoints").mkdir(parents=True)
    assert main(["export", str(run), str(tmp_path / "out")]) == 2


def test_export_nonempty_out_fails(trained_run, bundle, capsys):
    assert main(["export", str(trained_run), str(bundle)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_failed_export_leaves_no_half_bundle(trained_run, tmp_path, monkeypatch):
    """The bundle is written beside the destination and moved into place last: a failure on the
    way (here the LeRobot processor files, as on a machine without lerobot) leaves nothing behind."""
    import vidact.deploy.lerobot_plugin.processor_vidact as processors

    def broken(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'lerobot'")

    monkeypatch.setattr(processors, "save_processors", broken)
    out = tmp_path / "bundles" / "policy"
    with pytest.raises(ModuleNotFoundError):
        main(["export", str(trained_run), str(out)])
    assert not out.exists() and list((tmp_path / "bundles").iterdir()) == []
    monkeypatch.undo()
    assert main(["export", str(trained_run), str(out)]) == 0
    assert (out / "model.safetensors").is_file() and oct(out.stat().st_mode & 0o777) == "0o755"

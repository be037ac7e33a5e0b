"""Every debug recipe runs a few steps through the CLI on data generated here, writes its
checkpoints and media, and the finetune recipe starts from the pretraining run (init_from)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vidact.cli import main
from vidact.config import RECIPES_DIR, load


def _source(kind: str, path: Path, weight: float = 1.0) -> str:
    return f"{{kind: {kind}, path: '{path}', weight: {weight}}}"


def _train(recipe: str, run_dir: Path, *overrides: str) -> dict:
    assert main(["train", recipe, f"run_dir={run_dir}", *overrides]) == 0
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == load(recipe).train.steps
    assert (run_dir / "media" / "step-00000002-frames.png").is_file()
    return ckpt


@pytest.fixture(scope="module")
def pretrain_run(metaworld_data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("recipes") / "pretrain"
    ckpt = _train("debug_pretrain_webvideo", run_dir, f"data.sources=[{_source('webvideo', metaworld_data['manifest'])}]")
    assert not bool(ckpt["state_dict"]["model.normalizer.has_stats"])  # web video has no actions
    return run_dir


def test_debug_pretrain_webvideo(pretrain_run):
    assert not (pretrain_run / "media" / "step-00000002-actions.png").exists()  # video mode only


def test_debug_finetune_lerobot_from_pretraining(pretrain_run, robot_dataset, tmp_path, capsys):
    # The lit robot dataset has 2-dim state and action: those projections start fresh.
    run_dir = tmp_path / "finetune"
    ckpt = _train("debug_finetune_lerobot", run_dir, f"data.sources=[{_source('lerobot', robot_dataset)}]",
                  "model.state_dim=2", "model.action_dim=2", f"train.init_from={pretrain_run}")
    out = capsys.readouterr().out
    assert f"init_from {pretrain_run}:" in out and "skipped action_out.weight: shape (4, 64) != (2, 64)" in out
    assert bool(ckpt["state_dict"]["model.normalizer.has_stats"])
    assert (run_dir / "media" / "step-00000002-actions.png").is_file()


def test_debug_cotrain_mixture(metaworld_data, tmp_path):
    sources = f"[{_source('lerobot', metaworld_data['lerobot'], 0.5)}, {_source('webvideo', metaworld_data['manifest'], 0.5)}]"
    _train("debug_cotrain_mixture", tmp_path / "cotrain", f"data.sources={sources}")


def test_debug_finetune_metaworld(metaworld_data, tmp_path):
    ckpt = _train("debug_finetune_metaworld", tmp_path / "mw", f"data.sources=[{_source('lerobot', metaworld_data['lerobot'])}]")
    assert ckpt["vidact"]["batches_consumed"] == 4


@pytest.mark.parametrize("name", ["pretrain_webvideo", "finetune_lerobot", "cotrain_mixture", "finetune_metaworld"])
def test_each_recipe_has_a_debug_version(name):
    full, debug = load(name), load(f"debug_{name}")
    assert (RECIPES_DIR / f"debug_{name}.yaml").is_file()
    assert full.data.kind == debug.data.kind and [s.kind for s in full.data.sources] == [s.kind for s in debug.data.sources]
    assert debug.model.flavor == "tiny" and debug.train.steps <= 10

"""Stage knobs, all through train(): frozen modules, init_from (run, bundle) with its report,
gradient accumulation, activation checkpointing, the video-loss ramp."""

from __future__ import annotations

import csv

import pytest
import torch

from vidact.config import ConfigError, TrainConfig, load
from vidact.lit.init import init_weights
from vidact.lit.module import video_loss_scale
from vidact.models import VidAct
from vidact.train import train

RECIPE = "debug_sliding_square"
TINY = ["train.batch_size=4", "train.log_every=1", "train.warmup_steps=10", "train.checkpoint_every=100"]


def _last(run_dir) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("stages") / "source"
    train(load(RECIPE, [*TINY, "train.steps=3", f"run_dir={run_dir}"]))
    return run_dir


def test_freeze_keeps_named_modules_fixed(tmp_path):
    import lightning as L

    cfg = load(RECIPE, [*TINY, "train.steps=2", "train.freeze=[backbone,state_proj]", f"run_dir={tmp_path / 'f'}"])
    train(cfg)
    ckpt = _last(tmp_path / "f")
    L.seed_everything(cfg.seed, verbose=False)  # as train() does before building the model
    initial = VidAct(cfg.model).state_dict()
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()}
    for name in initial:
        if name.startswith(("backbone.", "state_proj.")):
            assert torch.equal(state[name], initial[name]), name
    assert not torch.equal(state["action_out.weight"], initial["action_out.weight"])
    assert not any(n.startswith(("backbone.", "state_proj.")) for n in ckpt["ema_state_dict"])


def test_freeze_unknown_name_suggests(tmp_path):
    with pytest.raises(ConfigError, match="'backbon' matches no parameter.*did you mean 'backbone'"):
        train(load(RECIPE, [*TINY, "train.freeze=[backbon]", f"run_dir={tmp_path}"]))


def test_init_from_run_reports_loaded_skipped_new(source_run, tmp_path, capsys):
    from vidact.export.consolidate import consolidate

    source = consolidate(source_run).state_dict  # EMA weights
    cfg = load(RECIPE, ["model.action_dim=3"])
    model = VidAct(cfg.model)
    report = init_weights(model, source_run)
    assert "action_out.weight" in report.skipped and "shape (2, 64) != (3, 64)" in report.skipped["action_out.weight"]
    assert "backbone.blocks.0.attn.qkv.weight" in report.loaded
    state = model.state_dict()
    for name in report.loaded:
        assert torch.equal(state[name], source[name].to(state[name].dtype)), name
    assert not report.new  # every weight of this model exists in the source (some with another shape)
    assert "normalizer.has_stats" in report.data_stats and not any(n.startswith("normalizer.") for n in report.loaded)

    # Through train(): the report is printed, and a resumed run does not re-initialize.
    run = [*TINY, "data.kind=fake", "model.action_dim=3", f"train.init_from={source_run}", f"run_dir={tmp_path / 'ft'}"]
    train(load(RECIPE, [*run, "train.steps=1"]))
    out = capsys.readouterr().out
    assert f"init_from {source_run}:" in out and "skipped action_out.weight: shape (2, 64) != (3, 64)" in out
    assert "normalizer statistics (" in out and "from this run's data" in out
    train(load(RECIPE, [*run, "train.steps=2"]))
    assert "tensors loaded" not in capsys.readouterr().out


def test_init_from_exported_bundle(source_run, tmp_path):
    from vidact.export.package import package

    bundle = package(source_run, tmp_path / "bundle")
    cfg = load(RECIPE)
    a, b = VidAct(cfg.model), VidAct(cfg.model)
    report_dir = init_weights(a, bundle)
    report_file = init_weights(b, bundle / "model.safetensors")
    assert not report_dir.skipped and not report_dir.new and report_dir.loaded == report_file.loaded
    for name, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[name])


def test_init_from_leaves_the_sources_data_statistics_behind(source_run, tmp_path):
    """A source trained on other data (reset scenes, another robot's demos) brings its weights, not
    its normalizer: this run's own data sets that."""
    from safetensors.torch import load_file, save_file

    from vidact.export.package import package

    weights = package(source_run, tmp_path / "bundle") / "model.safetensors"
    model = VidAct(load(RECIPE).model)
    before = {k: v.clone() for k, v in model.normalizer.state_dict().items()}
    state = load_file(weights)
    for name, value in before.items():  # stats of other data: a state that never moved
        state[f"normalizer.{name}"] = torch.tensor(True) if name == "has_stats" else torch.full_like(value, 1e-4)
    save_file(state, weights)
    report = init_weights(model, weights)
    assert sorted(report.data_stats) == sorted(f"normalizer.{k}" for k in before)
    for name, value in model.normalizer.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert "normalizer statistics (" in str(report)


def test_accumulation_counts_micro_batches(tmp_path, capsys):
    train(load(RECIPE, [*TINY, "train.steps=2", "train.accumulate=2", f"run_dir={tmp_path / 'acc'}"]))
    ckpt = _last(tmp_path / "acc")
    assert ckpt["global_step"] == 2 and ckpt["vidact"]["batches_consumed"] == 4
    assert "effective batch size 8 (4 x 1 devices x 2 accumulation)" in capsys.readouterr().out


def test_activation_checkpointing_gives_the_same_weights(tmp_path):
    for flag in (False, True):
        train(load(RECIPE, [*TINY, "train.steps=2", f"train.activation_checkpointing={flag}",
                            f"run_dir={tmp_path / str(flag)}"]))
    a, b = _last(tmp_path / "False"), _last(tmp_path / "True")
    for name, value in a["state_dict"].items():
        assert torch.allclose(value, b["state_dict"][name], atol=1e-6), name


def test_video_loss_ramp(tmp_path):
    train_cfg = TrainConfig(video_loss_ramp_steps=4, video_loss_ramp_from=0.2)
    assert [video_loss_scale(s, train_cfg) for s in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert video_loss_scale(0, TrainConfig()) == 1.0
    run_dir = tmp_path / "ramp"
    train(load(RECIPE, [*TINY, "train.steps=3", "train.video_loss_ramp_steps=4", f"run_dir={run_dir}"]))
    with open(run_dir / "metrics.csv") as f:
        scales = [float(r["train/video_loss_scale"]) for r in csv.DictReader(f) if r.get("train/video_loss_scale")]
    assert scales == pytest.approx([0.0, 0.25, 0.5])


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_compiled_model_trains_and_keeps_parameter_names(tmp_path):
    # Inductor compiles C++ on CPU: the whole forward (train.compile), minutes on 2 busy cores.
    train(load(RECIPE, [*TINY, "train.steps=2", "train.compile=true", f"run_dir={tmp_path / 'c'}"]))
    train(load(RECIPE, [*TINY, "train.steps=2", f"run_dir={tmp_path / 'e'}"]))
    compiled, eager = _last(tmp_path / "c"), _last(tmp_path / "e")
    assert compiled["state_dict"].keys() == eager["state_dict"].keys()
    for name, value in eager["state_dict"].items():
        assert torch.allclose(value, compiled["state_dict"][name], atol=1e-4), name

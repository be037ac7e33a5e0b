"""A real (tiny) training run through the CLI, exported once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """debug_sliding_square trained for 4 steps (16x16 grey frames, 2-dim state and action, K=4)."""
    from vidact.cli import main

    run_dir = tmp_path_factory.mktemp("deploy") / "run"
    assert main(["train", "debug_sliding_square", "train.steps=4", "train.batch_size=8", f"run_dir={run_dir}"]) == 0
    return run_dir


@pytest.fixture(scope="session")
def bundle(trained_run, tmp_path_factory) -> Path:
    from vidact.cli import main

    out = tmp_path_factory.mktemp("bundle") / "pretrained_model"
    assert main(["export", str(trained_run), str(out)]) == 0
    return out


TASK = "button-press-topdown-v3"
# A MetaWorld-shaped tiny model: one 32x32 camera, 4-dim state/action, two history frames 2 steps
# apart (so the policy's history buffer is exercised), K=4.
MW_MODEL = ["model.height=32", "model.width=32", "model.channels=3", "model.state_dim=4", "model.action_dim=4",
            "model.history=2", "model.future_frame_stride=2", "model.chunk_length=4",
            "model.frame_tokenizer.patch_size=8"]


def train_tiny(dataset: Path, run: Path, steps: int = 1, *overrides: str) -> int:
    """`vidact train` of the MetaWorld-shaped tiny model on one LeRobot dataset; the exit code."""
    from vidact.cli import main

    return main(["train", "debug_sliding_square", *MW_MODEL, *overrides, "data.kind=lerobot",
                 f"data.sources=[{{kind: lerobot, path: '{dataset}'}}]", f"train.steps={steps}", "train.batch_size=4",
                 f"run_dir={run}"])


@pytest.fixture(scope="session")
def train_metaworld_tiny():
    """``train_metaworld_tiny(dataset, run, steps, *overrides)``: :func:`train_tiny`'s exit code."""
    return train_tiny


@pytest.fixture(scope="session")
def mw_model() -> list[str]:
    """The overrides of the MetaWorld-shaped tiny model (``MW_MODEL``)."""
    return list(MW_MODEL)


@pytest.fixture(scope="session")
def trains_on():
    """``trains_on(dataset, run)``: a training step on the dataset succeeds (datasets vidact writes)."""
    return lambda dataset, run: train_tiny(dataset, run) == 0


@pytest.fixture(scope="session")
def metaworld_bundle(tmp_path_factory) -> Path:
    """1 expert episode generated with `vidact data metaworld`, 2 training steps, exported."""
    from vidact.cli import main

    root = tmp_path_factory.mktemp("mw")
    data, run, out = root / "data", root / "run", root / "bundle"
    assert main(["data", "metaworld", "--tasks", TASK, "--episodes", "1", "--out", str(data),
                 "--height", "32", "--width", "32"]) == 0
    assert train_tiny(data, run, steps=2) == 0
    assert main(["export", str(run), str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def judged_bundle(metaworld_bundle, tmp_path_factory):
    """A copy of the MetaWorld bundle with a judge trained by `vidact judge` (a few steps)."""
    import shutil

    from vidact.cli import main

    root = tmp_path_factory.mktemp("judged")
    bundle = root / "bundle"
    shutil.copytree(metaworld_bundle, bundle)
    data = metaworld_bundle.parent / "data"
    assert main(["judge", str(bundle), "--datasets", str(data), "--heldout", str(data), "--steps", "10",
                 "--every", "1", "--imagine-horizon", "4", "--imagine-every", "4", "--sampler-steps", "1"]) == 0
    return bundle

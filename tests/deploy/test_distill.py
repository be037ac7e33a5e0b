"""`vidact distill`: a student bundle whose few sampler steps land where the teacher's many do."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from vidact.cli import main


@pytest.fixture(scope="module")
def teacher(metaworld_bundle, tmp_path_factory):
    """The MetaWorld bundle with every weight perturbed (seeded): a network whose velocity field
    bends, so one Euler step lands far from ten (an untrained network's zero output heads give a
    constant field, where one step is already exact)."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("teacher") / "bundle"
    shutil.copytree(metaworld_bundle, out)
    weights = load_file(str(out / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    bent = {k: (v + 0.3 * torch.randn(v.shape, generator=generator) if v.is_floating_point() and "normalizer" not in k
                else v).contiguous() for k, v in weights.items()}
    save_file(bent, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def test_distilled_student_beats_the_truncated_teacher(teacher, metaworld_bundle, tmp_path):
    from vidact.deploy.policy import Policy

    data, out = metaworld_bundle.parent / "data", tmp_path / "student"
    assert main(["distill", str(teacher), "--dataset", str(data), "--out", str(out), "--student-steps", "1",
                 "--modes", "policy_fast", "policy", "--train-steps", "80", "--batch-size", "8", "--lr", "3e-3",
                 "--heldout-windows", "8"]) == 0
    record = json.loads((out / "vidact_policy.json").read_text())["distilled"]
    assert record["teacher_steps"] == 10 and record["student_steps"] == 1
    for key, before in record["truncated_teacher"].items():  # held-out windows: not what it trained on
        assert record["student"][key] < 0.7 * before, (key, before, record["student"][key])
    student = Policy.from_pretrained(out)
    assert student.sampler.config.steps == 1
    assert (out / "judge").is_dir() == (teacher / "judge").is_dir()  # the rest of the bundle travels along
    chunk = student.sampler.sample(_batch(student), "policy_fast", seed=0).actions
    assert chunk.shape[-1] == 4 and torch.isfinite(chunk).all()


def _batch(policy):
    from vidact.data.fake import fake_batch

    return fake_batch(policy.config, batch_size=2)


@pytest.mark.parametrize("args, words", [
    (["--student-steps", "10"], "is not fewer than the teacher's 10 steps"),
    (["--student-steps", "0"], "must be >= 1"),
    (["--bundle", "missing"], "is not a bundle folder"),
])
def test_distill_bad_input_is_one_line(metaworld_bundle, tmp_path, capsys, args, words):
    bundle = str(tmp_path / "missing") if "--bundle" in args else str(metaworld_bundle)
    rest = [a for a in args if a not in ("--bundle", "missing")]
    assert main(["distill", bundle, "--dataset", str(metaworld_bundle.parent / "data"), "--out",
                 str(tmp_path / "out"), *rest]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact distill: error:") and words in err and "\n" not in err, err

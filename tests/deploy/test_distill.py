"""`vidact distill`: a student bundle whose few sampler steps land where the teacher's many do."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch

from vidact.cli import main


@pytest.fixture(scope="module")
def teacher(judged_bundle, tmp_path_factory):
    """The judged MetaWorld bundle with every weight perturbed (seeded): a network whose velocity
    field bends, so one Euler step lands far from ten (an untrained network's zero output heads
    give a constant field, where one step is already exact)."""
    from safetensors.torch import load_file, save_file

    out = tmp_path_factory.mktemp("teacher") / "bundle"
    shutil.copytree(judged_bundle, out)
    weights = load_file(str(out / "model.safetensors"))
    generator = torch.Generator().manual_seed(0)
    bent = {k: (v + 0.3 * torch.randn(v.shape, generator=generator) if v.is_floating_point() and "normalizer" not in k
                else v).contiguous() for k, v in weights.items()}
    save_file(bent, str(out / "model.safetensors"), metadata={"format": "pt"})
    return out


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_distilled_student_beats_the_truncated_teacher(teacher, metaworld_bundle, tmp_path):
    from vidact.data.fake import fake_batch
    from vidact.deploy.policy import Policy
    from vidact.generative.sample import initial_noise

    data, out = metaworld_bundle.parent / "data", tmp_path / "student"
    before = digest(teacher / "model.safetensors")
    assert main(["distill", str(teacher), "--dataset", str(data), "--out", str(out), "--student-steps", "1",
                 "--modes", "policy_fast", "policy", "--train-steps", "80", "--batch-size", "8", "--lr", "3e-3",
                 "--heldout-windows", "8"]) == 0
    assert digest(teacher / "model.safetensors") == before  # the teacher is read, never written
    record = json.loads((out / "vidact_policy.json").read_text())["distilled"]
    assert record["teacher_steps"] == 10 and record["student_steps"] == 1
    for key, cut in record["truncated_teacher"].items():  # held-out windows: not what it trained on
        assert record["student"][key] < 0.7 * cut, (key, cut, record["student"][key])
    assert (out / "judge").is_dir()  # the rest of the bundle travels along

    # What was written is the student: from the bundle on disk, its one step lands nearer the
    # teacher's ten than the teacher's own one step does.
    student, slow = Policy.from_pretrained(out), Policy.from_pretrained(teacher)
    assert student.sampler.config.steps == 1 and student.sampler.config.method == "euler"
    batch = fake_batch(student.config, batch_size=4)
    noise = initial_noise(student.model, 4, seed=5)
    target = slow.sampler.sample(batch, "policy_fast", noise=noise).actions
    distilled = student.sampler.sample(batch, "policy_fast", noise=noise).actions
    cut = slow.sampler.sample(batch, "policy_fast", noise=noise, steps=1).actions
    assert torch.isfinite(distilled).all()
    assert (distilled - target).abs().mean() < (cut - target).abs().mean()


@pytest.mark.parametrize("case, words", [
    ("too_many_steps", "is not fewer than the teacher's 10 steps"),
    ("zero_steps", "must be >= 1"),
    ("missing", "is not a bundle folder"),
    ("inside_teacher", "overlap"),
])
def test_distill_bad_input_is_one_line(metaworld_bundle, tmp_path, capsys, case, words):
    bundle = tmp_path / "missing" if case == "missing" else metaworld_bundle
    out = metaworld_bundle / "student" if case == "inside_teacher" else tmp_path / "out"
    steps = {"too_many_steps": "10", "zero_steps": "0"}.get(case, "1")
    assert main(["distill", str(bundle), "--dataset", str(metaworld_bundle.parent / "data"), "--out", str(out),
                 "--student-steps", steps]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vidact distill: error:") and words in err and "\n" not in err, err
    assert not out.exists()

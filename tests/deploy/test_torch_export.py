"""`vidact export --format torch_export`: policy_fast as a torch.export program, parity-checked."""

from __future__ import annotations

import json
import re

import numpy as np
import torch

from vidact.cli import main


def test_torch_export_cli_parity_and_reload(trained_run, tmp_path, capsys):
    from vidact.deploy.policy import Policy
    from vidact.export.torch_export import (EXPORT_INFO_NAME, EXPORT_NAME, draw_action_noise, load_exported,
                                            text_inputs)

    out = tmp_path / "pretrained_model"
    assert main(["export", str(trained_run), str(out), "--format", "torch_export"]) == 0
    printed = capsys.readouterr().out
    match = re.search(r"torch\.export parity: max \|diff\| = (\S+)", printed)
    assert match, printed
    assert float(match.group(1)) <= 1e-4
    assert (out / EXPORT_NAME).is_file() and (out / "model.safetensors").is_file()
    info = json.loads((out / EXPORT_INFO_NAME).read_text())
    assert info["parity"]["max_abs_diff"] <= 1e-4 and info["output"]["actions"] == [1, 4, 2]

    # A fresh observation (not the export's example), through the Policy's preprocessing; the
    # program loaded with torch.export alone must give the Policy's actions for the same seed.
    policy = Policy.from_pretrained(out)
    c = policy.config
    rng = np.random.default_rng(123)
    obs = {"observation.image": rng.integers(0, 256, (c.height, c.width, c.channels), dtype=np.uint8),
           "observation.state": rng.standard_normal(c.state_dim).astype(np.float32), "task": "push the square"}
    batch, _ = policy._batch(obs)
    policy.reset()
    seed = 7
    expected = policy.predict_chunk(obs, seed=seed).actions  # [K,A], clipped (no bounds here: unclipped)
    emb, mask = text_inputs(policy.model, batch.text)
    assert emb.shape[1] == policy.model.text_encoder.max_length > int(mask.sum())  # padded
    noise = draw_action_noise(policy.model, 1, seed)
    program = load_exported(out / EXPORT_NAME)
    with torch.no_grad():
        got = program(batch.obs_frames, batch.state, batch.obs_is_pad, emb, mask, noise)
    assert got.shape == (1, c.chunk_length, c.action_dim)
    np.testing.assert_allclose(got[0].numpy(), expected, atol=1e-4, rtol=0)
    # Different noise gives different actions: the noise input is really used.
    with torch.no_grad():
        other = program(batch.obs_frames, batch.state, batch.obs_is_pad, emb, mask, noise + 1.0)
    assert not torch.allclose(other, got)


def test_default_format_writes_no_program(bundle):
    assert not (bundle / "policy_fast.pt2").exists()


def test_parity_failure_fails_the_export(trained_run, tmp_path, monkeypatch, capsys):
    import vidact.export.torch_export as te

    monkeypatch.setattr(te, "PARITY_TOLERANCE", -1.0)  # any error, even 0, is too large
    out = tmp_path / "bad"
    assert main(["export", str(trained_run), str(out), "--format", "torch_export"]) == 1
    err = capsys.readouterr().err
    assert "torch.export parity check failed" in err and "nothing was written" in err
    assert not out.exists()  # nothing half written

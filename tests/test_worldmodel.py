"""The model as a world model: autoregressive rollouts feed their own frames back, the metrics
give known answers, masked state is really masked, and a trained model is action-sensitive."""

import dataclasses

import pytest
import torch

from vidact.data.fake import sliding_square_batch, sliding_square_config
from vidact.generative import GenerativeConfig, Sampler, SamplerConfig, training_loss
from vidact.generative.schedule import Mode
from vidact.models import VidAct, VidActConfig
from vidact.types import Batch
from vidact.worldmodel.metrics import moving_mask, moving_mse, mse, psnr, ssim
from vidact.worldmodel.rollout import RolloutError, RolloutStart, rollout


def start_for(model: VidAct, B: int = 3, seed: int = 0) -> RolloutStart:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return RolloutStart(frames=torch.rand(B, c.history, c.views, c.channels, c.height, c.width, generator=g),
                        state=torch.randn(B, c.history, c.state_dim, generator=g), text=["push"] * B)


class RecordingSampler(Sampler):
    """A real sampler that keeps every batch it was given and every frame it returned."""

    def __init__(self, model):
        super().__init__(model, SamplerConfig(steps=2))
        self.batches, self.outputs = [], []

    def sample(self, batch, mode, **kw):
        out = super().sample(batch, mode, **kw)
        self.batches.append(batch)
        self.outputs.append(out)
        return out


def test_rollout_feeds_its_own_imagined_frames_back(tiny_model):
    c = tiny_model.config  # history 2, future_frames 2, stride 4, K 8: one call advances 2 frames
    start = start_for(tiny_model)
    sampler = RecordingSampler(tiny_model)
    actions = torch.randn(3, 24, c.action_dim)
    out = rollout(sampler, start, horizon=24, actions=actions)
    assert out.calls == 3 and len(sampler.batches) == 3
    assert out.frames.shape == (3, 6, c.views, c.channels, c.height, c.width)
    assert torch.equal(out.actions, actions)
    # Call 1 reads the real history; later calls read exactly the frames the previous call imagined.
    assert torch.equal(sampler.batches[0].obs_frames, start.frames)
    for prev, nxt in zip(sampler.outputs[:-1], sampler.batches[1:]):
        imagined = prev.future_frames.float().clamp(0, 1)
        assert torch.equal(nxt.obs_frames, imagined)
        assert not torch.equal(nxt.obs_frames[:, -1], start.frames[:, -1])
    # Each call is given the chunk that starts where it stands.
    for i, b in enumerate(sampler.batches):
        assert torch.equal(b.actions, actions[:, i * 8: i * 8 + 8])
    # Real state where the history is real, masked where it is imagined.
    assert not sampler.batches[0].state_is_pad.any()
    assert sampler.batches[2].state_is_pad.all()
    assert torch.equal(out.frames[:, :2], sampler.outputs[0].future_frames.float().clamp(0, 1))


def test_policy_rollout_executes_its_own_actions(tiny_model):
    sampler = RecordingSampler(tiny_model)
    out = rollout(sampler, start_for(tiny_model), horizon=8, actions=None)
    assert out.calls == 1
    assert torch.equal(out.actions, sampler.outputs[0].actions[:, :8].float())
    assert sampler.outputs[0].mode.value == "policy"


def test_rollout_errors_name_the_problem(tiny_model, tiny_cfg):
    sampler = Sampler(tiny_model, SamplerConfig(steps=1))
    start = start_for(tiny_model)
    with pytest.raises(RolloutError, match="positive"):
        rollout(sampler, start, horizon=0)
    with pytest.raises(RolloutError, match="multiple of the model's frame stride"):
        rollout(sampler, start, horizon=6)
    with pytest.raises(RolloutError, match="fewer than the horizon"):
        rollout(sampler, start, horizon=8, actions=torch.zeros(3, 4, tiny_cfg.action_dim))
    blind = VidAct(dataclasses.replace(tiny_cfg, future_frames=0))
    with pytest.raises(RolloutError, match="trained without video"):
        rollout(Sampler(blind), start_for(blind), horizon=8)


def test_masked_state_is_ignored(tiny_model):
    c = tiny_model.config
    g = torch.Generator().manual_seed(1)
    batch = Batch(obs_frames=torch.rand(2, c.history, c.views, c.channels, c.height, c.width, generator=g),
                  state=torch.randn(2, c.history, c.state_dim, generator=g), text=["a", "b"],
                  state_is_pad=torch.ones(2, c.history, dtype=torch.bool))
    other = dataclasses.replace(batch, state=batch.state * 100 + 3)
    sampler = Sampler(tiny_model, SamplerConfig(steps=2))
    a, b = sampler.policy(batch, seed=3), sampler.policy(other, seed=3)
    assert torch.allclose(a.actions, b.actions, atol=1e-5)
    unmasked = dataclasses.replace(other, state_is_pad=None)
    assert not torch.allclose(a.actions, sampler.policy(unmasked, seed=3).actions, atol=1e-3)


def test_state_dropout_and_change_weighting_train(tiny_model):
    from vidact.data.fake import fake_batch

    batch = fake_batch(tiny_model.config, batch_size=4)
    gen = GenerativeConfig(state_dropout=0.5, video_change_weight=4.0)
    out = training_loss(tiny_model.train(), batch, gen, torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.video_tokens_scored > 0
    out.loss.backward()
    with pytest.raises(ValueError, match="state_dropout"):
        GenerativeConfig(state_dropout=1.5)


@pytest.mark.parametrize("where", ["pixels", "tokens"])
def test_history_noise_reaches_the_model_where_configured(tiny_model, where):
    from vidact.data.fake import fake_batch

    batch = fake_batch(tiny_model.config, batch_size=4)
    seen = []
    embed = tiny_model.embed_prefix
    tiny_model.embed_prefix = lambda b, **kw: seen.append(b) or embed(b, **kw)
    gen = GenerativeConfig(history_noise=0.5, history_noise_on=where)
    training_loss(tiny_model.train(), batch, gen, torch.Generator().manual_seed(0))
    (b,) = seen
    clean = tiny_model.frame_tokenizer.encode(batch.obs_frames)
    if where == "pixels":
        assert b.obs_frame_latents is None and not torch.equal(b.obs_frames, batch.obs_frames)
    else:  # the frames stay; their tokens carry the noise, at most a few x 0.5 from the clean ones
        assert torch.equal(b.obs_frames, batch.obs_frames) and b.obs_frame_latents.shape == clean.shape
        diff = (b.obs_frame_latents - clean).flatten(1).std(1)
        assert (diff > 0).all() and (diff < 0.5 + 0.05).all()
    with pytest.raises(ValueError, match="history_noise_on"):
        GenerativeConfig(history_noise_on="latents")


def test_self_forcing_moves_samples_onto_their_own_imagined_frame(tiny_model):
    """generative.self_forcing: a chosen sample's newest history frame is the model's own
    forward-dynamics frame (no state), the real one before it, and actions and targets move on by
    one frame stride with the steps past the window padded; the other samples are untouched."""
    from vidact.data.fake import fake_batch
    from vidact.generative.loss import self_forced

    model = tiny_model.eval()
    c = model.config
    s = c.future_frame_stride
    batch = fake_batch(c, batch_size=3, seed=2).with_defaults()
    out = self_forced(model, batch, [1], steps=2, seed=7)
    imagined = Sampler(model, SamplerConfig(steps=2)).forward_dynamics(
        Batch(**{f.name: (v[1:2] if isinstance(v := getattr(batch, f.name), torch.Tensor) else
                          v[1:2] if isinstance(v, list) else v) for f in dataclasses.fields(batch)}), seed=7)
    assert torch.equal(out.obs_frames[1, 0], batch.obs_frames[1, 1])
    assert torch.allclose(out.obs_frames[1, 1], imagined.future_frames[0, 0])
    assert out.state_is_pad[1].tolist() == [False, True] and not out.obs_is_pad[1].any()
    assert torch.equal(out.actions[1, : c.chunk_length - s], batch.actions[1, s:])
    assert out.action_is_pad[1, -s:].all() and not out.action_is_pad[1, : c.chunk_length - s].any()
    assert torch.equal(out.future_frames[1, 0], batch.future_frames[1, 1]) and out.future_is_pad[1].tolist() == [False, True]
    for i in (0, 2):
        assert torch.equal(out.obs_frames[i], batch.obs_frames[i]) and torch.equal(out.actions[i], batch.actions[i])
    gen = GenerativeConfig(self_forcing=1.0, mode_weights={"forward_dynamics": 1.0})
    loss = training_loss(model.train(), batch, gen, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss.loss) and loss.video_tokens_scored == 3 * model.future_tokens // 2  # 2nd frame padded
    with pytest.raises(ValueError, match="self_forcing needs model.future_frames >= 2"):
        one = VidAct(dataclasses.replace(c, future_frames=1))
        self_forced(one, fake_batch(one.config, batch_size=2), [0], steps=1, seed=0)
    with pytest.raises(ValueError, match="self_forcing=2"):
        GenerativeConfig(self_forcing=2)


def test_frame_metrics_known_answers():
    g = torch.Generator().manual_seed(0)
    real = torch.rand(2, 3, 24, 24, generator=g)
    assert torch.allclose(ssim(real, real), torch.ones(2))
    assert torch.equal(mse(real, real), torch.zeros(2))
    half = torch.full_like(real, 0.5)
    assert torch.allclose(psnr(half, torch.zeros_like(real)), torch.full((2,), 10 * torch.log10(torch.tensor(4.0))))
    assert (ssim(half, real) < 0.2).all()
    last = torch.zeros(1, 3, 8, 8)
    future = last.clone()
    future[..., 2:4, 2:4] = 1.0  # 4 pixels move
    assert int(moving_mask(last, future).sum()) == 4
    # Copying the last frame is maximally wrong on exactly the moving pixels; the truth scores 0.
    assert moving_mse(last, future, last).item() == pytest.approx(1.0)
    assert moving_mse(future, future, last).item() == 0.0
    assert torch.isnan(moving_mse(last, last, last)).all()  # nothing moved: undefined, not 0


def _train_sliding_square(gen: GenerativeConfig, steps: int):
    """A tiny model trained on the sliding square with one instruction for every sample (so only the
    frames and actions say where the square goes) -> (model in eval mode, batch(n, generator))."""
    torch.manual_seed(0)
    # Token-identity embeddings at DiT's scale: at ViT's 0.02 this model learned no forward dynamics
    # in 300-600 steps (error = copying the frame, true and shuffled actions alike; docs/notes.md).
    cfg = sliding_square_config(embedding_init_std=1.0)
    model = VidAct(cfg)

    def batch(n, rng):
        return dataclasses.replace(sliding_square_batch(cfg, n, rng), text=["push"] * n)

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    rng = torch.Generator().manual_seed(1)
    for _ in range(steps):
        out = training_loss(model, batch(64, rng), gen, rng)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        sched.step()
    return model.eval(), batch


def test_trained_model_is_worse_with_shuffled_actions():
    """Sliding square with one instruction for all samples: the future square position is known only
    from the actions, so a forward model must use them (the failure "different actions, same video")."""
    # measured (1 thread): true 0.084, shuffled 0.100, copy 0.095; at 300 steps 0.085 / 0.093
    gen = GenerativeConfig(language_dropout=0.0, mode_weights={"forward_dynamics": 1.0})
    model, batch = _train_sliding_square(gen, steps=500)
    test = batch(256, torch.Generator().manual_seed(999))
    start = RolloutStart(frames=test.obs_frames, state=test.state, text=test.text)
    sampler = Sampler(model, SamplerConfig(steps=10))
    real, last = test.future_frames[:, 0].flatten(0, 1), test.obs_frames[:, 0].flatten(0, 1)
    true_err = mse(rollout(sampler, start, 4, test.actions).frames[:, 0].flatten(0, 1), real).mean()
    wrong_err = mse(rollout(sampler, start, 4, test.actions.roll(1, 0)).frames[:, 0].flatten(0, 1), real).mean()
    copy_err = mse(last, real).mean()
    numbers = dict(true=float(true_err), shuffled=float(wrong_err), copy=float(copy_err))
    assert true_err < copy_err and wrong_err > 1.1 * true_err, numbers


def test_action_guidance_interpolates_between_video_and_forward_dynamics(tiny_model):
    from vidact.data.fake import fake_batch

    batch = fake_batch(tiny_model.config, batch_size=2, seed=4)
    plain = Sampler(tiny_model, SamplerConfig(steps=3)).forward_dynamics(batch, seed=1).future_latents
    same = Sampler(tiny_model, SamplerConfig(steps=3, action_guidance=1.0)).forward_dynamics(batch, seed=1)
    assert torch.equal(plain, same.future_latents)
    # Weight 0 keeps only the branch without actions: exactly video mode from the same noise.
    none = Sampler(tiny_model, SamplerConfig(steps=3, action_guidance=0.0)).forward_dynamics(batch, seed=1)
    video = Sampler(tiny_model, SamplerConfig(steps=3)).video(batch, seed=1)
    assert torch.allclose(none.future_latents, video.future_latents, atol=1e-5)
    assert not torch.allclose(plain, video.future_latents, atol=1e-3)
    pushed = Sampler(tiny_model, SamplerConfig(steps=3, action_guidance=3.0)).forward_dynamics(batch, seed=1)
    assert not torch.allclose(pushed.future_latents, plain, atol=1e-3)


@pytest.mark.slow
def test_inverse_dynamics_labels_beat_the_mean_action():
    """What `vidact label` relies on, with a known answer: on the sliding square with one instruction
    for every sample, a model trained in inverse_dynamics mode infers the actions from the frames
    alone (state masked out, as for videos) better than the mean action does. Measured (1 thread):
    label MAE 0.85 / 0.59 / 0.45 / 0.43 after 200 / 400 / 500 / 600 steps, mean action 0.73."""
    gen = GenerativeConfig(language_dropout=0.0, state_dropout=0.5, mode_weights={"inverse_dynamics": 1.0})
    model, batch = _train_sliding_square(gen, steps=500)
    test = batch(256, torch.Generator().manual_seed(999))
    test.state_is_pad = torch.ones(256, model.config.history, dtype=torch.bool)
    inferred = Sampler(model, SamplerConfig(steps=10)).sample(test, Mode.INVERSE_DYNAMICS, seed=0).actions
    label_err = (inferred - test.actions).abs().mean()
    mean_err = (test.actions.mean((0, 1)) - test.actions).abs().mean()
    assert label_err < 0.75 * mean_err, dict(label=float(label_err), mean=float(mean_err))


def test_chunk_tail_completes_the_chunk_with_the_policys_plan_or_repeats():
    """The world model takes K actions; after the s executed ones it gets the rest of the chunk the
    policy planned (when the executed ones are that chunk's start), else the last one repeated."""
    from types import SimpleNamespace

    from vidact.worldmodel.env import chunk_tail

    planned = torch.arange(12, dtype=torch.float32).view(2, 6, 1)
    policy = SimpleNamespace(last_chunk=SimpleNamespace(actions=planned.numpy()))
    executed = planned[:, :2]
    assert torch.equal(chunk_tail(policy, executed, 4, "policy"), planned[:, 2:4])
    assert torch.equal(chunk_tail(policy, executed, 4, "repeat"), executed[:, -1:].expand(2, 2, 1))
    other = executed + 1  # not the start of the planned chunk (another executor): repeat
    assert torch.equal(chunk_tail(policy, other, 4, "policy"), other[:, -1:].expand(2, 2, 1))

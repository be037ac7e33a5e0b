import dataclasses

import pytest
import torch

from vidact.data.fake import fake_batch
from vidact.generative import GenerativeConfig, Mode, Sampler, SamplerConfig, training_loss
from vidact.models import FLAVORS, VidAct, VidActConfig
from vidact.models.layout import Group
from vidact.tokenizers.config import FrameTokenizerConfig, ObsEncoderConfig
from vidact.types import Batch

SHAPES = {  # mode -> (actions returned, future frames returned)
    Mode.POLICY: (True, True), Mode.POLICY_FAST: (True, False), Mode.FORWARD_DYNAMICS: (True, True),
    Mode.INVERSE_DYNAMICS: (True, False), Mode.VIDEO: (False, True),
}


@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("method", ["euler", "heun"])
def test_every_mode_has_the_right_shapes_and_is_reproducible(tiny_model, tiny_cfg, mode, method):
    batch = fake_batch(tiny_cfg, 3, seed=1)
    sampler = Sampler(tiny_model, SamplerConfig(method=method, steps=3, guidance_scale=2.0))
    a, b, c = (sampler.sample(batch, mode, seed=s) for s in (5, 5, 6))
    want_actions, want_video = SHAPES[mode]
    B, K, A = 3, tiny_cfg.chunk_length, tiny_cfg.action_dim
    if want_actions:
        assert a.actions.shape == (B, K, A)
        assert torch.equal(a.actions, b.actions)
    if want_video:
        frame = (tiny_cfg.views, tiny_cfg.channels, tiny_cfg.height, tiny_cfg.width)
        assert a.future_frames.shape == (B, tiny_cfg.future_frames, *frame)
        assert torch.equal(a.future_frames, b.future_frames)
        assert not torch.equal(a.future_frames, c.future_frames)  # the seed matters
    else:
        assert a.future_frames is None
    if mode == Mode.FORWARD_DYNAMICS:
        assert torch.equal(a.actions, batch.actions)  # given, returned as is
    elif want_actions:
        assert not torch.equal(a.actions, c.actions)
    if not want_actions:
        assert a.actions is None


def test_named_mode_methods_match_sample(tiny_model, tiny_cfg):
    batch = fake_batch(tiny_cfg, 2)
    sampler = Sampler(tiny_model, SamplerConfig(steps=2))
    assert torch.equal(sampler.policy(batch).actions, sampler.sample(batch, Mode.POLICY).actions)
    assert torch.equal(sampler.inverse_dynamics(batch).actions, sampler.sample(batch, "inverse_dynamics").actions)
    assert torch.equal(sampler.video(batch).future_frames, sampler.sample(batch, Mode.VIDEO).future_frames)


@pytest.mark.parametrize("mode", [Mode.POLICY_FAST, Mode.POLICY])
def test_noise_scale_is_the_action_noise_temperature(tiny_model, tiny_cfg, mode):
    """A known answer: scale s from seed k is the default sampler started from s times seed k's
    action noise (video noise unchanged); at 0 every seed gives the same chunk where no video is
    generated with it."""
    from vidact.generative.sample import initial_noise

    batch = fake_batch(tiny_cfg, 2)
    noise_v, noise_a = initial_noise(tiny_model, 2, 5)
    half = Sampler(tiny_model, SamplerConfig(steps=2, noise_scale=0.5)).sample(batch, mode, seed=5)
    given = Sampler(tiny_model, SamplerConfig(steps=2)).sample(batch, mode, noise=(noise_v, 0.5 * noise_a))
    assert torch.allclose(half.actions, given.actions, atol=1e-6)
    full = Sampler(tiny_model, SamplerConfig(steps=2)).sample(batch, mode, seed=5)
    assert not torch.allclose(half.actions, full.actions)
    cold = Sampler(tiny_model, SamplerConfig(steps=2, noise_scale=0.0))
    same = torch.equal(cold.sample(batch, mode, seed=1).actions, cold.sample(batch, mode, seed=2).actions)
    assert same == (mode == Mode.POLICY_FAST)  # policy: the imagined frame's noise still moves the actions
    with pytest.raises(ValueError, match="sampler.noise_scale must be in"):
        SamplerConfig(noise_scale=-1.0)


def _inputs(model, cfg, B=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    xv = torch.randn(B, model.future_tokens, model.latent_dim, generator=g)
    xa = torch.randn(B, cfg.chunk_length, cfg.action_dim, generator=g)
    return xv, xa, torch.rand(B, generator=g), torch.rand(B, generator=g)


def test_cached_prefix_gives_the_same_prediction_as_the_full_sequence(tiny_model, tiny_cfg):
    batch = fake_batch(tiny_cfg, 2)
    prefix = tiny_model.embed_prefix(batch)
    xv, xa, tv, ta = _inputs(tiny_model, tiny_cfg)
    with torch.no_grad():
        full = tiny_model(prefix, xv, xa, tv, ta)
        cached = tiny_model.forward_cached(tiny_model.cache_prefix(prefix), xv, xa, tv, ta)
    assert torch.allclose(full.video, cached.video, atol=1e-5)
    assert torch.allclose(full.action, cached.action, atol=1e-5)
    assert full.action.abs().mean() > 1e-3  # a real comparison, not of zeros


def test_masking_a_group_in_training_equals_dropping_it_at_inference(tiny_model, tiny_cfg):
    """Training rehearses policy_fast / video by masking; inference removes the tokens."""
    batch = fake_batch(tiny_cfg, 2)
    prefix = tiny_model.embed_prefix(batch)
    xv, xa, tv, ta = _inputs(tiny_model, tiny_cfg)
    no = torch.zeros(2, dtype=torch.bool)
    with torch.no_grad():
        masked = tiny_model(prefix, xv, xa, tv, ta, future_valid=no)
        dropped = tiny_model(prefix, None, xa, tv, ta)
        masked_v = tiny_model(prefix, xv, xa, tv, ta, action_valid=no)
        dropped_v = tiny_model(prefix, xv, None, tv, ta)
    assert torch.allclose(masked.action, dropped.action, atol=1e-5)
    assert torch.allclose(masked_v.video, dropped_v.video, atol=1e-5)


def test_policy_fast_does_not_pay_for_video_tokens(tiny_model, tiny_cfg):
    seen = []
    hook = tiny_model.backbone.blocks[0].register_forward_hook(lambda m, args, out: seen.append(args[0].shape[1]))
    batch = fake_batch(tiny_cfg, 1)
    Sampler(tiny_model, SamplerConfig(steps=4)).policy_fast(batch)
    hook.remove()
    prefix_len = len(tiny_model.embed_prefix(batch).layout)
    # One prefix pass, then 4 steps over the action tokens alone.
    assert seen == [prefix_len] + [tiny_cfg.chunk_length] * 4
    assert tiny_model.future_tokens > 0


def _grads(model):
    return {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


def _zero_or_none(g):
    return g is None or not g.any()


ACTION_ONLY = ("action_in.", "action_out.", "action_pos")


def test_action_free_batch_gives_no_gradient_to_action_parameters(tiny_cfg):
    torch.manual_seed(0)
    model = VidAct(tiny_cfg)
    batch = fake_batch(tiny_cfg, 4, action_free=True)
    out = training_loss(model, batch, GenerativeConfig(), torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss) and out.action_steps_scored == 0 and out.video_tokens_scored > 0
    assert out.mode_counts == {"video": 4}
    out.loss.backward()
    grads = _grads(model)
    action_params = [n for n in grads if n.startswith(ACTION_ONLY)]
    assert action_params and all(_zero_or_none(grads[n]) for n in action_params)
    assert not _zero_or_none(grads["future_out.weight"])


def test_batch_with_actions_trains_both_heads(tiny_cfg):
    torch.manual_seed(0)
    model = VidAct(tiny_cfg)
    cfg = GenerativeConfig(mode_weights={"policy": 1.0, "policy_fast": 0.0, "inverse_dynamics": 0.0,
                                         "forward_dynamics": 0.0})
    out = training_loss(model, fake_batch(tiny_cfg, 4), cfg, torch.Generator().manual_seed(0))
    out.loss.backward()
    grads = _grads(model)
    for prefix in ("action_out.weight", "future_out.weight"):
        assert not _zero_or_none(grads[prefix]), prefix
    # Zero-initialised heads: their inputs get gradient from the second step on; the heads now do.
    assert out.action_steps_scored == 4 * tiny_cfg.chunk_length and out.video_tokens_scored > 0


def test_mixed_batch_scores_actions_only_where_present(tiny_cfg):
    model = VidAct(tiny_cfg)
    batch = fake_batch(tiny_cfg, 4)
    batch.has_actions = torch.tensor([True, False, True, False])
    batch.action_is_pad = torch.zeros(4, tiny_cfg.chunk_length, dtype=torch.bool)
    batch.action_is_pad[0, -3:] = True
    cfg = GenerativeConfig(mode_weights={"policy": 1.0, "policy_fast": 0.0, "inverse_dynamics": 0.0,
                                         "forward_dynamics": 0.0})
    out = training_loss(model, batch, cfg, torch.Generator().manual_seed(0))
    assert out.mode_counts == {"policy": 2, "video": 2}
    assert out.action_steps_scored == 2 * tiny_cfg.chunk_length - 3


@pytest.mark.parametrize("field,value,message", [
    ("obs_frames", torch.rand(2, 2, 2, 3, 16, 32), r"'obs_frames': expected shape \[B,Th,V,C,H,W\] = \[2, 2, 2, 3, 32, 32\]"),
    ("actions", torch.randn(2, 8, 4), r"'actions': expected shape \[B,K,A\] = \[2, 8, 5\]"),
    ("state", torch.randn(2, 2), r"'state': expected shape \[B,Th,S\] = \[2, 2, 3\]"),
    ("text", None, r"'text': expected 2 instruction strings"),
    ("text", ["only one"], r"'text': expected 2 instruction strings .* got 1 strings"),
    ("future_frames", torch.rand(2, 1, 2, 3, 32, 32), r"'future_frames': expected shape \[B,Tf,V,C,H,W\]"),
])
def test_bad_input_names_the_field_and_expected_shape(tiny_model, tiny_cfg, field, value, message):
    batch = dataclasses.replace(fake_batch(tiny_cfg, 2), **{field: value})
    with pytest.raises(ValueError, match=message):
        training_loss(tiny_model, batch, GenerativeConfig())


def test_modes_that_need_given_inputs_say_so(tiny_model, tiny_cfg):
    batch = dataclasses.replace(fake_batch(tiny_cfg, 1), future_frames=None, actions=None)
    with pytest.raises(ValueError, match="inverse_dynamics.*'future_frames'"):
        Sampler(tiny_model).inverse_dynamics(batch)
    with pytest.raises(ValueError, match="forward_dynamics.*'actions'"):
        Sampler(tiny_model).forward_dynamics(batch)
    with pytest.raises(TypeError, match="expected a vidact.types.Batch"):
        Sampler(tiny_model).policy({"obs_frames": batch.obs_frames})


def test_guidance_changes_samples_and_language_drop_masks_text(tiny_model, tiny_cfg):
    batch = fake_batch(tiny_cfg, 2)
    s = Sampler(tiny_model, SamplerConfig(steps=2))
    assert not torch.allclose(s.policy(batch, guidance_scale=1.0).actions, s.policy(batch, guidance_scale=3.0).actions)
    prefix = tiny_model.embed_prefix(batch, drop_language=torch.tensor([True, False]))
    lang = prefix.layout.slices()[Group.LANGUAGE]
    assert not prefix.key_valid[0, lang].any() and prefix.key_valid[1, lang].any()


def test_cached_text_embeddings_match_encoding_on_the_fly(tiny_model, tiny_cfg):
    batch = fake_batch(tiny_cfg, 2)
    emb, mask = tiny_model.text_encoder(batch.text)
    cached = dataclasses.replace(batch, text_embeddings=emb, text_mask=mask)
    s = Sampler(tiny_model, SamplerConfig(steps=2))
    assert torch.equal(s.policy_fast(batch).actions, s.policy_fast(cached).actions)


def test_flavor_registry_sizes():
    assert set(FLAVORS) == {"tiny", "S", "B", "L"}
    tiny = VidAct(VidActConfig(flavor="tiny"))
    assert tiny.num_parameters(trainable_only=True) < 1_000_000
    dims = [FLAVORS[f][0] * FLAVORS[f][1] for f in ("tiny", "S", "B", "L")]
    assert dims == sorted(dims)
    with pytest.raises(ValueError, match="model.flavor='XL' is not one of"):
        VidActConfig(flavor="XL")
    with pytest.raises(ValueError, match="not divisible by model.heads"):
        VidActConfig(flavor="tiny", heads=5)


def test_vae_and_timm_variants_run_every_mode(tmp_path):
    from vidact.models.configuration import FrameTokenizerConfig, ObsEncoderConfig

    cfg = VidActConfig(flavor="tiny", height=32, width=32, frame_tokenizer=FrameTokenizerConfig(kind="vae", patch_size=4),
                       obs_encoder=ObsEncoderConfig(kind="timm", timm_name="resnet18"), chunk_length=4)
    model = VidAct(cfg).eval()
    batch = fake_batch(cfg, 2)
    out = training_loss(model, batch, GenerativeConfig(), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    res = Sampler(model, SamplerConfig(steps=2)).policy(batch)
    assert res.future_frames.shape == (2, 1, 1, 3, 32, 32) and res.actions.shape == (2, 4, 4)
    assert not any(p.requires_grad for p in model.obs_encoder.parameters())


def test_a_latent_model_can_read_its_observations_as_pixel_patches():
    """obs_encoder.kind=patch: observed frames are pixel patches (their own token count) while the
    model predicts VAE latents; the residual base comes from cached latents when the batch has them."""
    from vidact.models.configuration import FrameTokenizerConfig, ObsEncoderConfig

    cfg = VidActConfig(flavor="tiny", height=32, width=32, history=2, frame_tokenizer=FrameTokenizerConfig(kind="vae", patch_size=2),
                       obs_encoder=ObsEncoderConfig(kind="patch", patch_size=8), chunk_length=4,
                       video_prediction="x0", video_residual=True)
    model = VidAct(cfg).eval()
    assert model.obs_tokens_per_frame == 16 and model.tokens_per_frame == 64  # 32/8 squared; (32/2/2) squared
    batch = fake_batch(cfg, 2)
    out = training_loss(model, batch, GenerativeConfig(), torch.Generator().manual_seed(0))
    out.loss.backward()
    assert torch.isfinite(out.loss) and model.future_out.weight.grad.abs().sum() > 0
    for mode in Mode:
        Sampler(model, SamplerConfig(steps=2)).sample(batch, mode)
    latents = model.frame_tokenizer.encode(batch.obs_frames)
    before = model.frame_tokenizer.frames_encoded
    prefix = model.embed_prefix(dataclasses.replace(batch, obs_frame_latents=latents))
    assert model.frame_tokenizer.frames_encoded == before  # nothing re-encoded
    assert torch.equal(prefix.future_base, latents[:, -1:].flatten(1, 3))
    assert prefix.layout.length(Group.OBS) == 2 * 16
    with pytest.raises(ValueError, match="model.obs_encoder.patch_size=5 must divide"):
        VidAct(dataclasses.replace(cfg, obs_encoder=ObsEncoderConfig(kind="patch", patch_size=5)))


def test_batch_collate_stacks_samples():
    samples = [{"obs_frames": torch.rand(1, 1, 3, 8, 8), "state": torch.zeros(1, 2), "text": "a", "has_actions": True}
               for _ in range(3)]
    batch = Batch.collate(samples)
    assert batch.obs_frames.shape == (3, 1, 1, 3, 8, 8) and batch.text == ["a"] * 3
    assert batch.has_actions.dtype == torch.bool
    with pytest.raises(KeyError, match="unknown batch fields"):
        Batch.collate([{"obs_frame": torch.zeros(1)}])


def test_x0_prediction_is_read_as_the_same_velocity(tiny_cfg):
    """model.video_prediction="x0": the head's clean-frame estimate enters the loss and the sampler
    as v = (x_tau - x0_hat) / tau, so a perfect x0 estimate is exactly the velocity target eps - x0,
    the cached and full paths agree, and every mode still samples."""
    from vidact.models.vidact import X0_MIN_TAU, Prediction

    cfg = dataclasses.replace(tiny_cfg, video_prediction="x0")
    torch.manual_seed(0)
    model = VidAct(cfg).eval()
    torch.nn.init.normal_(model.future_out.weight, std=0.1)  # the heads start at zero
    batch = fake_batch(cfg, 3)
    x0 = model.encode_frames(batch.future_frames)
    eps = torch.randn_like(x0)
    tau = torch.tensor([1.0, 0.5, 0.01])  # the last is floored at X0_MIN_TAU
    x_tau = (1 - tau.view(-1, 1, 1)) * x0 + tau.view(-1, 1, 1) * eps
    pred = model._as_velocity(Prediction(x0, None), x_tau, tau)
    floor = tau.clamp(min=X0_MIN_TAU).view(-1, 1, 1)
    torch.testing.assert_close(pred.video, (x_tau - x0) / floor)
    torch.testing.assert_close(pred.video[:2], (eps - x0)[:2])
    with torch.no_grad():
        prefix = model.embed_prefix(batch)
        xa = torch.randn(3, cfg.chunk_length, cfg.action_dim)
        full = model(prefix, x_tau, xa, tau, torch.ones(3))
        cached = model.forward_cached(model.cache_prefix(prefix), x_tau, xa, tau, torch.ones(3))
    torch.testing.assert_close(full.video, cached.video, atol=1e-5, rtol=1e-4)
    out = Sampler(model, SamplerConfig(steps=2)).sample(batch, Mode.POLICY, seed=0)
    assert out.future_frames.shape == batch.future_frames.shape and torch.isfinite(out.future_frames).all()
    with pytest.raises(ValueError, match="model.video_prediction"):
        dataclasses.replace(tiny_cfg, video_prediction="eps")


@pytest.mark.parametrize("prediction", ["velocity", "x0"])
def test_video_residual_starts_from_the_last_observed_frame(tiny_cfg, prediction):
    """model.video_residual: with the zero-initialised head a fresh model's one-step clean-frame
    estimate is exactly the last observed frame (x0 mode), the cached and full paths agree, and
    sampling returns finite frames of the right shape."""
    cfg = dataclasses.replace(tiny_cfg, video_prediction=prediction, video_residual=True)
    torch.manual_seed(0)
    model = VidAct(cfg).eval()
    batch = fake_batch(cfg, 2)
    with torch.no_grad():
        prefix = model.embed_prefix(batch)
        last = model.encode_frames(batch.obs_frames[:, -1:]).repeat(1, cfg.future_frames, 1)
        torch.testing.assert_close(prefix.future_base, last)
        x = torch.randn_like(last)
        tau = torch.full((2,), 0.7)
        xa = torch.randn(2, cfg.chunk_length, cfg.action_dim)
        full = model(prefix, x, xa, tau, torch.ones(2))
        if prediction == "x0":
            torch.testing.assert_close(x - 0.7 * full.video, last)  # x0_hat = x_tau - tau v
        else:
            torch.testing.assert_close(full.video, -last)  # zero head: v = 0 - base
        torch.nn.init.normal_(model.future_out.weight, std=0.1)
        full = model(prefix, x, xa, tau, torch.ones(2))
        cached = model.forward_cached(model.cache_prefix(prefix), x, xa, tau, torch.ones(2))
    torch.testing.assert_close(full.video, cached.video, atol=1e-5, rtol=1e-4)
    out = Sampler(model, SamplerConfig(steps=2, guidance_scale=2.0)).sample(batch, Mode.POLICY, seed=0)
    assert out.future_frames.shape == batch.future_frames.shape and torch.isfinite(out.future_frames).all()


def _padded_prediction(model, cfg):
    """One full-sequence pass over a batch with a padded history frame and a dropped future group,
    so the per-sample key mask matters; returns the prediction."""
    batch = fake_batch(cfg, 3)
    batch.obs_is_pad = torch.tensor([[True, False], [False, False], [False, False]])
    g = torch.Generator().manual_seed(1)
    fx = torch.randn(3, model.future_tokens, model.latent_dim, generator=g)
    ax = torch.randn(3, cfg.chunk_length, cfg.action_dim, generator=g)
    tau = torch.rand(3, generator=g)
    return model(model.embed_prefix(batch), fx, ax, tau, tau.flip(0), future_valid=torch.tensor([True, False, True]))


@pytest.mark.parametrize("attr,value", [("attention_backend", "flex"), ("cond_gather", "matmul"), ("fast_norms", False)])
def test_kernel_choices_compute_the_same_function(tiny_model, tiny_cfg, attr, value):
    # Transformer's kernel switches change how, not what: the same prediction and, where the CPU
    # can take a backward (FlexAttention has none there), the same gradients.
    model = tiny_model
    reference = _padded_prediction(model, tiny_cfg)
    (reference.action.square().sum() + reference.video.square().sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    setattr(model.backbone, attr, value)
    try:
        if value == "flex":
            with torch.no_grad():
                other = _padded_prediction(model, tiny_cfg)
        else:
            other = _padded_prediction(model, tiny_cfg)
            (other.action.square().sum() + other.video.square().sum()).backward()
            for n, p in model.named_parameters():
                if n in grads:
                    torch.testing.assert_close(p.grad, grads[n], atol=1e-5, rtol=1e-4, msg=n)
    finally:
        setattr(model.backbone, attr, {"attention_backend": "sdpa", "cond_gather": "auto", "fast_norms": True}[attr])
        model.zero_grad()
    assert reference.action.abs().mean() > 1e-3
    torch.testing.assert_close(other.action, reference.action, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(other.video, reference.video, atol=1e-5, rtol=1e-4)


def test_compute_dtype_norms_equal_the_modules():
    from vidact.models.transformer import layer_norm, rms_norm

    x = torch.randn(2, 5, 16)
    norm = torch.nn.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
    torch.testing.assert_close(rms_norm(norm, x), norm(x))
    torch.testing.assert_close(layer_norm(x), torch.nn.LayerNorm(16, elementwise_affine=False, eps=1e-6)(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the activations' dtype, the weight cast to it
        assert rms_norm(norm, x.bfloat16()).dtype == layer_norm(x.bfloat16()).dtype == torch.bfloat16


def test_layout_caches_hold_no_fake_tensors_after_an_export(tiny_model, tiny_cfg):
    # torch.export traces with fake tensors; the per-layout mask and index caches must not keep them.
    from vidact.models.layout import attention_mask
    from vidact.models.vidact import _cond_index
    from torch._subclasses.fake_tensor import FakeTensorMode

    layout = tiny_model.embed_prefix(fake_batch(tiny_cfg, 1)).layout
    with FakeTensorMode():
        attention_mask(layout, None, "cpu")
        _cond_index(layout, torch.device("cpu"), 0)
    assert type(attention_mask(layout, None, "cpu")) is torch.Tensor
    assert type(_cond_index(layout, torch.device("cpu"), 0)) is torch.Tensor


def test_graphed_sampler_needs_a_gpu_batch(tiny_model, tiny_cfg):
    from vidact.generative.graphs import GraphedSampler

    with pytest.raises(ValueError, match="CUDA device"):
        GraphedSampler(Sampler(tiny_model), fake_batch(tiny_cfg, 1), Mode.POLICY_FAST)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("mode", [Mode.POLICY_FAST, Mode.POLICY])
def test_graphed_sampler_replays_the_eager_sample(tiny_model, tiny_cfg, mode):
    from vidact.generative.graphs import GraphedSampler
    from vidact.generative.sample import initial_noise

    model = tiny_model.cuda().eval()
    sampler = Sampler(model, SamplerConfig(steps=3))
    graphed = GraphedSampler(sampler, fake_batch(tiny_cfg, 1, seed=0).to("cuda"), mode)
    for seed in (1, 2):  # new observations and noise copied into the graph's buffers
        batch, noise = fake_batch(tiny_cfg, 1, seed=seed).to("cuda"), initial_noise(model, 1, seed)
        torch.testing.assert_close(graphed(batch, noise).actions, sampler.sample(batch, mode, noise=noise).actions)


def test_rest_shows_the_steps_before_the_episode_start_and_masks_other_padding(tiny_model, tiny_cfg):
    """model.history_before_start=rest: the history steps before an episode's first frame (leading
    pads, which repeat that frame) are attended to as the arm at rest; other padding stays masked."""
    rest = VidAct(dataclasses.replace(tiny_cfg, history_before_start="rest")).eval()
    rest.load_state_dict(tiny_model.state_dict())
    batch = fake_batch(tiny_cfg, 2)
    xv, xa, tv, ta = _inputs(tiny_model, tiny_cfg)

    def predict(model, pad):
        b = dataclasses.replace(batch, obs_is_pad=torch.tensor([pad, pad]))
        with torch.no_grad():
            return model(model.embed_prefix(b), xv, xa, tv, ta).action

    at_start, none, trailing = [True, False], [False, False], [False, True]
    assert torch.allclose(predict(rest, at_start), predict(rest, none), atol=1e-6)
    assert not torch.allclose(predict(tiny_model, at_start), predict(tiny_model, none), atol=1e-4)
    assert torch.allclose(predict(rest, trailing), predict(tiny_model, trailing), atol=1e-6)
    assert not torch.allclose(predict(rest, trailing), predict(rest, none), atol=1e-4)
    with pytest.raises(ValueError, match="history_before_start"):
        dataclasses.replace(tiny_cfg, history_before_start="zeros")


def frame_local_model(history: int = 3, **overrides) -> VidAct:
    torch.manual_seed(0)
    cfg = VidActConfig(height=32, width=32, history=history, future_frame_stride=2, chunk_length=4,
                       prefix_attention="frame_local", frame_tokenizer=FrameTokenizerConfig(patch_size=8), **overrides)
    model = VidAct(cfg).eval()
    with torch.no_grad():  # zero-initialised heads and gates would hide every difference
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


# The scene-state input: each step's state token also carries the head's reading of its frame.
SCENE_INPUT = dict(env_state_dim=6, env_state_source="encoder", env_state_input=True,
                   obs_encoder=ObsEncoderConfig(kind="vit", patch_size=8, layers=1, width=32))


@pytest.mark.parametrize("overrides", [{}, SCENE_INPUT], ids=["plain", "scene_state_input"])
def test_frame_local_prefix_is_assembled_from_frames_computed_alone(overrides):
    """model.prefix_attention=frame_local: the instruction's and each step's keys/values, computed
    on their own, assemble into the prefix cache of the whole history, and the training forward
    reads the prefix as the cache does."""

    model = frame_local_model(**overrides)
    B = 2
    batch = Batch(obs_frames=torch.rand(B, 3, 1, 3, 32, 32), state=torch.randn(B, 3, 4), text=["pick it", "open it now"],
                  obs_is_pad=torch.tensor([[True, False, False], [False, False, False]]))
    with torch.no_grad():
        prefix = model.embed_prefix(batch)
        whole = model.cache_prefix(prefix)
        language = model.cache_language(batch)
        steps = [model.cache_frame(language, batch.obs_frames[:, i], batch.state[:, i]) for i in range(3)]
        assembled = model.assemble_prefix(language, steps, ~batch.obs_is_pad, prefix.future_base)
        assert assembled.layout == whole.layout and torch.equal(assembled.key_valid, whole.key_valid)
        valid = whole.key_valid[:, None, :, None]
        for (k1, v1), (k2, v2) in zip(whole.layers, assembled.layers):
            assert ((k1 - k2).abs() * valid).max() < 1e-5 and ((v1 - v2).abs() * valid).max() < 1e-5
        xv, xa = torch.randn(B, model.future_tokens, model.latent_dim), torch.randn(B, 4, 4)
        tau_v, tau_a = torch.rand(B), torch.rand(B)
        trained = model(prefix, xv, xa, tau_v, tau_a)
        for cache in (whole, assembled):
            cached = model.forward_cached(cache, xv, xa, tau_v, tau_a)
            assert torch.allclose(trained.action, cached.action, atol=1e-5)
            assert torch.allclose(trained.video, cached.video, atol=1e-5)
        # The slot enters where the generated tokens read the frames: swapping two frames changes the chunk.
        swapped = model.assemble_prefix(language, [steps[1], steps[0], steps[2]], torch.ones(B, 3, dtype=torch.bool))
        ordered = model.assemble_prefix(language, steps, torch.ones(B, 3, dtype=torch.bool))
        a = model.forward_cached(swapped, xv, xa, tau_v, tau_a).action
        assert not torch.allclose(a, model.forward_cached(ordered, xv, xa, tau_v, tau_a).action, atol=1e-3)


def test_frame_local_prefix_keeps_frames_apart():
    """A frame's prefix tokens do not read the other frames (what makes its keys/values reusable)."""
    from vidact.models.layout import TokenLayout

    layout = TokenLayout.build(frames=2, language=3, state=2, obs=4, action=2)
    m = layout.mask()
    assert layout.slots().tolist() == [-1, -1, -1, 0, 1, 0, 0, 1, 1, -1, -1]
    state0, obs1, action = 3, 7, 9
    assert m[state0, :3].all() and m[state0, 5] and not m[state0, 4] and not m[state0, obs1]
    assert m[obs1, 4] and not m[obs1, 5] and not m[obs1, action]
    assert m[action, :].all()  # the generated tokens read every slot


def test_keypoint_encoder_trains_in_the_model_and_finds_a_dot():
    """obs_encoder.kind=keypoints: K tokens per frame (where + what), trained with the model; its
    soft argmax learns in a few dozen steps where a single dot is, far better than the center."""
    from vidact.models.configuration import ObsEncoderConfig
    from vidact.tokenizers.video import KeypointObsEncoder

    enc_cfg = ObsEncoderConfig(kind="keypoints", keypoints=4, conv_width=16)
    cfg = VidActConfig(flavor="tiny", height=32, width=32, history=2, obs_encoder=enc_cfg, chunk_length=4)
    model = VidAct(cfg).eval()
    assert model.obs_tokens_per_frame == 4 and "obs_encoder" not in model.frozen_modules()
    batch = fake_batch(cfg, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):  # zero-initialized blocks: the prefix reaches the loss from the third step
        opt.zero_grad()
        out = training_loss(model, batch, GenerativeConfig(), torch.Generator().manual_seed(0))
        out.loss.backward()
        opt.step()
    assert torch.isfinite(out.loss) and model.obs_encoder.logits.weight.grad.abs().sum() > 0
    for mode in Mode:
        Sampler(model, SamplerConfig(steps=2)).sample(batch, mode)

    torch.manual_seed(0)
    enc = KeypointObsEncoder(enc_cfg, 3, 32, 32)
    readout = torch.nn.Linear(4 * (2 + 16), 2)
    opt = torch.optim.Adam([*enc.parameters(), *readout.parameters()], lr=3e-3)

    def dots(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        where = torch.randint(2, 30, (n, 2))
        frames = torch.zeros(n, 3, 32, 32)
        for i, (x, y) in enumerate(where.tolist()):
            frames[i, :, y - 1:y + 2, x - 1:x + 2] = 1.0
        return frames, where.float() / 31 * 2 - 1

    for _ in range(150):
        frames, target = dots(32)
        loss = (readout(enc.encode(frames).flatten(1)) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    frames, target = dots(64)
    with torch.no_grad():
        err = (readout(enc.encode(frames).flatten(1)) - target).abs().mean()
    assert err < 0.5 * target.abs().mean(), (err, target.abs().mean())
    with pytest.raises(ValueError, match="conv_width=12 a multiple of 8"):
        KeypointObsEncoder(ObsEncoderConfig(kind="keypoints", conv_width=12), 3, 32, 32)

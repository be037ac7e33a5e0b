"""Planning in imagination and its judge on a tiny model: the planner executes the candidate its
scorer prefers (checked against candidates imagined one by one, one chunk or two deep), N=1 is
the plain policy, CEM never returns worse than its proposals, a goal image picks the candidate
that imagines it."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from vidact.deploy.planner import SEED_STRIDE, Planner, PlannerConfig, PlanningError
from vidact.generative.sample import Sampler, SamplerConfig, initial_noise
from vidact.generative.schedule import Mode
from vidact.types import Batch
from vidact.worldmodel.judge import (Judge, JudgeConfig, JudgeData, JudgeError, auc, episode_labels, judge_metrics,
                                     outcome_labels, train_judge)

TEXT = "push the block"


def _batch(model, B: int = 2, seed: int = 0) -> Batch:
    c = model.config
    g = torch.Generator().manual_seed(seed)
    return Batch(obs_frames=torch.rand(B, c.history, c.views, c.channels, c.height, c.width, generator=g),
                 state=torch.randn(B, c.history, c.state_dim, generator=g), text=[TEXT] * B)


def _judge(model, seed: int = 0) -> Judge:
    c = model.config
    torch.manual_seed(seed)
    return Judge(JudgeConfig(channels=c.channels, height=c.height, width=c.width, tasks=[TEXT], width_mult=4)).eval()


@pytest.fixture
def action_sensitive(tiny_model):
    """The tiny model with its future-frame head scaled up, so that what a candidate chunk imagines
    (and how it scores) clearly depends on the chunk: the random model's futures differ by ~0.002
    between chunks, this one's by ~0.08."""
    model = copy.deepcopy(tiny_model)
    with torch.no_grad():
        model.future_out.weight.mul_(100)
    return model


def _one_by_one(sampler: Sampler, batch: Batch, mode: Mode, seed: int, n: int):
    """Each candidate sampled and imagined on its own: (actions [N,B,K,A], last frames [N,B,V,C,H,W])."""
    actions, frames = [], []
    common_v = initial_noise(sampler.model, batch.batch_size, seed)[0]  # every candidate imagined from it
    for i in range(n):
        noise_v, noise_a = initial_noise(sampler.model, batch.batch_size, seed + i * SEED_STRIDE)
        a = sampler.sample(batch, mode, noise=(noise_v, noise_a)).actions
        f = sampler.sample(dataclasses.replace(batch, actions=a), Mode.FORWARD_DYNAMICS,
                           noise=(common_v, torch.zeros_like(noise_a))).future_frames
        actions.append(a)
        frames.append(f[:, -1].clamp(0, 1))  # the tiny model's chunk reaches both its frames
    return torch.stack(actions), torch.stack(frames)


@pytest.mark.parametrize("mode", [Mode.POLICY_FAST, Mode.POLICY])
def test_best_of_n_executes_the_candidate_the_judge_prefers(action_sensitive, mode):
    sampler, judge, batch, N, seed = Sampler(action_sensitive, SamplerConfig(steps=2)), _judge(action_sensitive), \
        _batch(action_sensitive), 4, 3
    plan = Planner(sampler, PlannerConfig("best_of_n", N), judge=judge).plan(batch, mode, seed)
    actions, frames = _one_by_one(sampler, batch, mode, seed, N)
    scores = torch.stack([judge.predict(frames[i, :, 0], batch.text)[0] for i in range(N)], 1)  # [B,N]
    assert scores.std(1).min() > 1e-4  # each sample's candidates differ, so the choice means something
    torch.testing.assert_close(plan.scores, scores, atol=1e-5, rtol=1e-4)
    best = scores.argmax(1)
    assert plan.chosen.tolist() == best.tolist() and best.tolist() != [0, 0]  # not just the plain policy's chunk
    torch.testing.assert_close(plan.actions, actions[best, torch.arange(2)], atol=1e-5, rtol=1e-4)
    assert plan.future_frames.shape[:2] == (2, action_sensitive.config.future_frames)


def test_a_policy_at_its_mean_plans_over_candidates_at_the_planning_noise(action_sensitive):
    """A policy that samples at noise scale 0 plans with ``noise_scale``: candidate 0 is the plain
    policy's own chunk (so N=1 is still the plain policy), candidates 1..N-1 are what the policy
    samples at the planning scale from their own seeds. Scored by closeness to the frame one
    candidate imagines, the plan executes exactly that candidate."""
    mean_policy = Sampler(action_sensitive, SamplerConfig(steps=2, noise_scale=0.0))
    batch, N, seed, mode = _batch(action_sensitive, B=1), 4, 5, Mode.POLICY_FAST
    plain = mean_policy.sample(batch, mode, seed=seed).actions
    noisy, _ = _one_by_one(Sampler(action_sensitive, SamplerConfig(steps=2)), batch, mode, seed, N)
    candidates = torch.cat([plain[None], noisy[1:]])  # [N,B,K,A]
    assert (candidates[1:] - plain).abs().amax() > 1e-3  # the planning noise makes other chunks
    common_v, zeros = initial_noise(action_sensitive, 1, seed)[0], torch.zeros_like(plain)
    for k in (2, 0):
        goal = mean_policy.sample(dataclasses.replace(batch, actions=candidates[k]), Mode.FORWARD_DYNAMICS,
                                  noise=(common_v, zeros)).future_frames[0, -1].clamp(0, 1)  # [V,C,H,W]
        plan = Planner(mean_policy, PlannerConfig("best_of_n", N, noise_scale=1.0), goal=goal).plan(batch, mode, seed)
        assert plan.chosen.tolist() == [k] and plan.scores[0, k] > -1e-6  # the goal is exactly its frame
        assert plan.scores[0].topk(2).values[1] < -1e-5  # and no other candidate comes near it
        torch.testing.assert_close(plan.actions, candidates[k], atol=1e-5, rtol=1e-4)
    one = Planner(mean_policy, PlannerConfig("best_of_n", 1, noise_scale=1.0), goal=goal).plan(batch, mode, seed)
    torch.testing.assert_close(one.actions, plain, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", ["history 2, 2 future frames", "history 3, 1 future frame, padded start"])
@pytest.mark.parametrize("score", ["last", "mean"])
def test_a_two_chunk_horizon_scores_what_the_policy_does_after_each_candidate(tiny_cfg, score, shape):
    """Horizon 2, checked candidate by candidate: imagine the candidate's chunk, put the imagined
    frames in the history (written out by hand: real frames and their state shift left, an
    imagined frame's state is unknown), let the policy choose its next chunk there (one noise for
    every candidate), imagine that, and score the frames with the judge."""
    from vidact.models import VidAct

    cfg = tiny_cfg if shape.startswith("history 2") else dataclasses.replace(tiny_cfg, history=3, future_frames=1)
    torch.manual_seed(0)
    model = VidAct(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(std=0.05)
    sampler, judge, batch, N, seed, mode = (Sampler(model, SamplerConfig(steps=2)), _judge(model), _batch(model),
                                            3, 7, Mode.POLICY_FAST)
    B, Th = batch.batch_size, cfg.history
    batch.obs_is_pad = torch.zeros(B, Th, dtype=torch.bool)
    if Th == 3:
        batch.obs_is_pad[0, 0] = True  # sample 0's episode has just begun
    plan = Planner(sampler, PlannerConfig("best_of_n", N, horizon=2, score=score), judge=judge).plan(batch, mode, seed)
    common_v = initial_noise(model, B, seed)[0]
    follow_v, follow_a = (x.expand(B, *x.shape[1:]) for x in initial_noise(model, 1, seed + (N + 1) * SEED_STRIDE))
    expected, one_deep = [], []
    for i in range(N):
        noise_v, noise_a = initial_noise(model, B, seed + i * SEED_STRIDE)
        first = sampler.sample(batch, mode, noise=(noise_v, noise_a)).actions
        frames1 = sampler.sample(dataclasses.replace(batch, actions=first), Mode.FORWARD_DYNAMICS,
                                 noise=(common_v, torch.zeros_like(noise_a))).future_frames.clamp(0, 1)
        if Th == 2:  # both history slots now hold the two imagined frames
            after = Batch(obs_frames=frames1, state=batch.state[:, [1, 1]], text=batch.text,
                          obs_is_pad=torch.zeros(B, 2, dtype=torch.bool),
                          state_is_pad=torch.ones(B, 2, dtype=torch.bool))
        else:  # [real t-s, real t, imagined t+s]: the real ones keep their own state and padding
            after = Batch(obs_frames=torch.cat([batch.obs_frames[:, 1:], frames1], 1),
                          state=batch.state[:, [1, 2, 2]], text=batch.text,
                          obs_is_pad=torch.tensor([[False, False, False]] * B),
                          state_is_pad=torch.tensor([[False, False, True]] * B))
        second = sampler.sample(after, mode, noise=(follow_v, follow_a)).actions
        frames2 = sampler.sample(dataclasses.replace(after, actions=second), Mode.FORWARD_DYNAMICS,
                                 noise=(follow_v, torch.zeros_like(follow_a))).future_frames.clamp(0, 1)
        scored = torch.cat([frames1, frames2], 1) if score == "mean" else frames2[:, -1:]
        T = scored.shape[1]
        expected.append(judge.predict(scored.flatten(0, 1)[:, 0], [TEXT] * (B * T))[0].view(B, T).mean(1))
        one_deep.append(judge.predict(frames1[:, -1, 0], batch.text)[0])
    expected = torch.stack(expected, 1)
    torch.testing.assert_close(plan.scores, expected, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(expected, torch.stack(one_deep, 1), atol=1e-4)  # looking ahead changes the scores
    # The tiny random judge scores the candidates within ~1e-5 of each other: the executed one must be
    # a best one up to that tolerance (argmax of near-ties depends on the float reduction order).
    chosen = expected.gather(1, plan.chosen[:, None]).squeeze(1)
    assert torch.all(chosen >= expected.max(1).values - 1e-5), (plan.chosen, expected)
    assert plan.chosen.tolist() == plan.scores.argmax(1).tolist()  # and it is the best by the planner's own scores
    assert plan.future_frames.shape[:2] == (B, cfg.future_frames)  # the chosen chunk's own future


def test_cem_looks_ahead_from_the_same_noise_every_round(tiny_model):
    """With a horizon, the score CEM reports for its chunk is what that chunk scores when planned
    alone (best-of-1 from the same seed and follow-up noise): rounds are compared fairly."""
    sampler, judge, batch, seed = Sampler(tiny_model, SamplerConfig(steps=2)), _judge(tiny_model), _batch(tiny_model), 5
    cem = Planner(sampler, PlannerConfig("cem", 6, iterations=2, horizon=2), judge=judge).plan(
        batch, Mode.POLICY_FAST, seed)
    proposals = Planner(sampler, PlannerConfig("best_of_n", 6, horizon=2), judge=judge).plan(
        batch, Mode.POLICY_FAST, seed)
    assert (cem.best_score >= proposals.best_score - 1e-6).all()
    again = Planner(sampler, PlannerConfig("cem", 6, iterations=0, horizon=2), judge=judge)
    common_v = initial_noise(tiny_model, 2, seed)[0]
    _, rescored = again.evaluate(batch, cem.actions, common_v, Mode.POLICY_FAST, seed)
    torch.testing.assert_close(rescored, cem.best_score, atol=1e-5, rtol=1e-4)


def test_cem_never_returns_worse_than_the_policy_proposals(tiny_model):
    sampler, judge, batch, seed = Sampler(tiny_model, SamplerConfig(steps=2)), _judge(tiny_model), _batch(tiny_model), 5
    proposals = Planner(sampler, PlannerConfig("best_of_n", 6), judge=judge).plan(batch, Mode.POLICY_FAST, seed)
    cem = Planner(sampler, PlannerConfig("cem", 6, iterations=2), judge=judge).plan(batch, Mode.POLICY_FAST, seed)
    assert (cem.best_score >= proposals.best_score - 1e-6).all()
    # The score it reports is what the chosen chunk really imagines to (the common video noise).
    chosen_noise = initial_noise(tiny_model, 2, seed)[0]
    again = sampler.sample(dataclasses.replace(batch, actions=cem.actions), Mode.FORWARD_DYNAMICS,
                           noise=(chosen_noise, torch.zeros_like(cem.actions))).future_frames
    torch.testing.assert_close(judge.predict(again[:, -1, 0], batch.text)[0], cem.best_score, atol=1e-5, rtol=1e-4)


def test_a_goal_image_picks_the_candidate_that_imagines_it(tiny_model):
    sampler, batch, seed = Sampler(tiny_model, SamplerConfig(steps=2)), _batch(tiny_model, B=1), 11
    _, frames = _one_by_one(sampler, batch, Mode.POLICY_FAST, seed, 5)
    plan = Planner(sampler, PlannerConfig("best_of_n", 5), goal=frames[3, 0]).plan(batch, Mode.POLICY_FAST, seed)
    assert plan.chosen.tolist() == [3]


def test_a_policy_that_imagines_nothing_plans_with_a_separate_world_model(tiny_cfg, action_sensitive):
    """``world``: the policy (here an actions-only model) proposes the candidates from its own noise,
    the world model imagines each from its own video noise and the judge picks; checked candidate by
    candidate. Without a world model the same policy cannot plan."""
    from vidact.models import VidAct

    torch.manual_seed(1)
    policy = VidAct(dataclasses.replace(tiny_cfg, future_frames=0)).eval()
    with torch.no_grad():
        for p in policy.parameters():
            if p.requires_grad and p.abs().sum() == 0:
                p.normal_(std=0.05)
    judge, batch, N, seed, mode = _judge(action_sensitive), _batch(action_sensitive), 4, 5, Mode.POLICY_FAST
    with pytest.raises(PlanningError, match="imagines no frames.*--plan-model"):
        Planner(Sampler(policy, SamplerConfig(steps=2)), PlannerConfig("best_of_n", N), judge=judge)
    sampler, world = Sampler(policy, SamplerConfig(steps=2)), Sampler(action_sensitive, SamplerConfig(steps=2))
    plan = Planner(sampler, PlannerConfig("best_of_n", N), judge=judge, world=world).plan(batch, mode, seed)
    common_v = initial_noise(action_sensitive, batch.batch_size, seed)[0]
    actions, scores = [], []
    for i in range(N):
        a = sampler.sample(batch, mode, noise=initial_noise(policy, batch.batch_size, seed + i * SEED_STRIDE)).actions
        f = world.sample(dataclasses.replace(batch, actions=a), Mode.FORWARD_DYNAMICS,
                         noise=(common_v, torch.zeros_like(a))).future_frames
        actions.append(a)
        scores.append(judge.predict(f[:, -1, 0].clamp(0, 1), batch.text)[0])
    actions, scores = torch.stack(actions), torch.stack(scores, 1)
    assert scores.std(1).min() > 1e-4
    torch.testing.assert_close(plan.scores, scores, atol=1e-5, rtol=1e-4)
    best = scores.argmax(1)
    assert plan.chosen.tolist() == best.tolist()
    torch.testing.assert_close(plan.actions, actions[best, torch.arange(2)], atol=1e-5, rtol=1e-4)
    one = Planner(sampler, PlannerConfig("best_of_n", 1), judge=judge, world=world).plan(batch, mode, seed)
    torch.testing.assert_close(one.actions, sampler.sample(batch, mode, seed=seed).actions)  # N=1: the plain policy


def test_a_margin_keeps_the_policys_own_chunk_unless_another_is_clearly_better(action_sensitive):
    sampler, judge, batch, N, seed, mode = (Sampler(action_sensitive, SamplerConfig(steps=2)), _judge(action_sensitive),
                                            _batch(action_sensitive), 4, 3, Mode.POLICY_FAST)
    free = Planner(sampler, PlannerConfig("best_of_n", N), judge=judge).plan(batch, mode, seed)
    gap = free.scores.max(1).values - free.scores[:, 0]  # how much the best beats the policy's own chunk
    assert (gap > 0).all() and (gap[0] - gap[1]).abs() > 1e-4
    margin = float(gap.mean())  # between the two samples' gaps: one switches, the other keeps its own
    plan = Planner(sampler, PlannerConfig("best_of_n", N, margin=margin), judge=judge).plan(batch, mode, seed)
    own = Planner(sampler, PlannerConfig("best_of_n", 1), judge=judge).plan(batch, mode, seed)
    torch.testing.assert_close(plan.scores, free.scores)
    for b in range(2):
        switch = bool(gap[b] > margin)
        assert plan.chosen[b] == (free.chosen[b] if switch else 0)
        torch.testing.assert_close(plan.actions[b], (free if switch else own).actions[b])
        torch.testing.assert_close(plan.best_score[b], free.scores[b].max() if switch else free.scores[b, 0])
    with pytest.raises(PlanningError, match="--plan-margin must be >= 0, got -0.1"):
        PlannerConfig("best_of_n", N, margin=-0.1)


def test_planning_bad_input_names_both_sides(tiny_model):
    sampler = Sampler(tiny_model)
    with pytest.raises(PlanningError, match="--candidates must be >= 1"):
        PlannerConfig("best_of_n", 0)
    with pytest.raises(PlanningError, match="is not one of"):
        PlannerConfig("beam", 4)
    with pytest.raises(PlanningError, match="--plan-horizon must be >= 1, got 0"):
        PlannerConfig("best_of_n", 4, horizon=0)
    with pytest.raises(PlanningError, match="--plan-score 'max' is not one of"):
        PlannerConfig("best_of_n", 4, score="max")
    with pytest.raises(PlanningError, match="needs a judge"):
        Planner(sampler, PlannerConfig())
    with pytest.raises(PlanningError, match="a noise scale of 0 makes all 4 candidates the same chunk"):
        Planner(Sampler(tiny_model, SamplerConfig(noise_scale=0.0)), PlannerConfig("best_of_n", 4),
                judge=_judge(tiny_model))
    Planner(sampler, PlannerConfig("best_of_n", 2, noise_scale=0.0), judge=_judge(tiny_model))  # a draw vs the mean
    with pytest.raises(PlanningError, match=r"--plan-noise-scale 0 makes candidates 1\.\.3 the same chunk"):
        Planner(sampler, PlannerConfig("best_of_n", 4, noise_scale=0.0), judge=_judge(tiny_model))
    with pytest.raises(PlanningError, match=r"--plan-noise-scale must be in \[0, 10\], got -1"):
        PlannerConfig("best_of_n", 4, noise_scale=-1.0)
    small = Judge(JudgeConfig(channels=3, height=16, width=16, tasks=[TEXT], width_mult=4))
    with pytest.raises(PlanningError, match=r"judge reads \[3,16,16\] frames but the model imagines \[3,32,32\]"):
        Planner(sampler, PlannerConfig(), judge=small)
    with pytest.raises(PlanningError, match=r"goal-image is \[1, 3, 16, 16\].*imagines \[2, 3, 32, 32\]"):
        Planner(sampler, PlannerConfig(), goal=torch.rand(1, 3, 16, 16))
    from vidact.models import VidAct

    other = VidAct(dataclasses.replace(tiny_model.config, action_dim=3, chunk_length=4))
    with pytest.raises(PlanningError, match=r"differ \(action dim 5 vs 3; chunk length 8 vs 4: policy vs world model\)"):
        Planner(sampler, PlannerConfig(), judge=_judge(tiny_model), world=Sampler(other))
    planner = Planner(sampler, PlannerConfig("best_of_n", 2), judge=_judge(tiny_model))
    batch = dataclasses.replace(_batch(tiny_model), text=["open the drawer"] * 2)
    with pytest.raises(JudgeError, match=r"not trained on instruction\(s\) \['open the drawer'\]"):
        planner.plan(batch, Mode.POLICY_FAST, 0)


def test_episode_labels_and_auc_known_answers():
    value, done = episode_labels(torch.tensor([False, False, False, True, True]), gamma=0.5)
    torch.testing.assert_close(value, torch.tensor([0.125, 0.25, 0.5, 1.0, 1.0]))
    assert done.tolist() == [0, 0, 0, 1, 1]
    value, done = episode_labels(torch.zeros(3, dtype=torch.bool), gamma=0.5)
    assert value.tolist() == [0, 0, 0] and done.tolist() == [0, 0, 0]
    assert auc(torch.tensor([0.1, 0.2, 0.8, 0.9]), torch.tensor([0, 0, 1, 1])) == 1.0
    assert auc(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([0, 0, 1, 1])) == 0.0
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([0, 1])) == 0.5


def test_outcome_labels_follow_the_real_twin():
    """Imagined frame j stands for control step j * stride: done from the real success step on,
    discounted value before it; a real failure is 0 throughout."""
    value, done = outcome_labels(5, stride=4, success=True, length=9, gamma=0.5)  # success with action 9 (index 8)
    torch.testing.assert_close(value, torch.tensor([0.5 ** 8, 0.5 ** 4, 1.0, 1.0, 1.0]))
    assert done.tolist() == [0, 0, 1, 1, 1]
    recorded, _ = episode_labels(torch.arange(9) >= 8, gamma=0.5)  # the same episode recorded: row 8 first done
    torch.testing.assert_close(value[:3], recorded[::4])
    value, done = outcome_labels(3, stride=4, success=False, length=200, gamma=0.5)
    assert value.tolist() == [0, 0, 0] and done.tolist() == [0, 0, 0]


def test_fine_tuning_starts_from_the_given_judge_and_refuses_another_task_list():
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(8, 3, 16, 16, generator=g) * 255).to(torch.uint8)
    labels = torch.tensor([1.0, 0] * 4)
    data = JudgeData(frames, [TEXT] * 8, labels, labels, labels.bool(), torch.rand(8, 2, generator=g))
    cfg = JudgeConfig(channels=3, height=16, width=16, tasks=[TEXT], width_mult=4, state_dim=2)
    first = train_judge(data, cfg, steps=3, batch_size=4)
    first.state_mean.fill_(7.0)
    tuned = train_judge(data, cfg, steps=1, batch_size=4, lr=1e-12, init=first)  # (almost) no step: the same judge
    assert tuned.state_mean.tolist() == [7.0, 7.0]
    for a, b in zip(first.parameters(), tuned.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    other = JudgeConfig(channels=3, height=16, width=16, tasks=[TEXT, "another task"], width_mult=4, state_dim=2)
    with pytest.raises(JudgeError, match="cannot fine-tune a judge into another configuration: .'tasks'"):
        train_judge(data, other, steps=1, init=first)


def test_judge_learns_to_tell_success_frames_from_failure_frames():
    """A scene where success is a bright square in the top-left corner and failure the same square
    elsewhere: after a short training the judge ranks held-out success frames above failures."""
    def frames(n: int, corner: bool, g: torch.Generator) -> torch.Tensor:
        x = torch.rand(n, 3, 16, 16, generator=g) * 0.2
        for i in range(n):
            r, c = (0, 0) if corner else torch.randint(6, 12, (2,), generator=g).tolist()
            x[i, :, r: r + 4, c: c + 4] = 1.0
        return (x * 255).round().to(torch.uint8)

    g = torch.Generator().manual_seed(0)
    ok, bad = frames(64, True, g), frames(64, False, g)
    ones, zeros = torch.ones(64), torch.zeros(64)
    data = JudgeData(torch.cat([ok, bad]), [TEXT] * 128, torch.cat([ones, zeros]), torch.cat([ones, zeros]),
                     torch.cat([ones, zeros]).bool())
    judge = train_judge(data, JudgeConfig(channels=3, height=16, width=16, tasks=[TEXT], width_mult=4), steps=150,
                        batch_size=32, shift=0)
    held = torch.cat([frames(16, True, g), frames(16, False, g)])
    labels = torch.cat([torch.ones(16), torch.zeros(16)])
    value, done = judge.predict(held, [TEXT] * 32)
    metrics = judge_metrics(value, done, labels, labels, labels.bool())
    assert metrics["done_auc"] > 0.95 and metrics["value_mae"] < 0.3, metrics

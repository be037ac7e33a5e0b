"""The state labeller's network with a known answer: a lagging arm (a mocap target moved by the
action, the hand following it) whose actions are recovered from the hand's trajectory alone."""

from __future__ import annotations

import torch

from vidact.data.state_idm import StateInverseDynamics, fit_state_idm, heldout_error, window_features


def lagging_arm(seed: int, steps: int = 80) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random actions in [-1, 1]^3; target += 0.01 a; hand += 0.4 (target - hand)."""
    gen = torch.Generator().manual_seed(seed)
    knots = torch.rand(steps // 10 + 2, 3, generator=gen) * 2 - 1
    actions = torch.nn.functional.interpolate(knots.T[None], size=steps, mode="linear", align_corners=True)[0].T
    target, hand, states = torch.zeros(3), torch.zeros(3), []
    for a in actions:
        states.append(hand.clone())
        target = target + 0.01 * a
        hand = hand + 0.4 * (target - hand)
    return torch.stack(states), actions


def test_window_features_are_the_state_and_its_differences():
    states = torch.arange(5.0)[:, None]  # one dimension: 0, 1, 2, 3, 4
    f = window_features(states, back=1, ahead=2)
    assert f.shape == (5, 4)
    assert f[2].tolist() == [2.0, -1.0, 1.0, 2.0]  # s_t, s_{t-1}-s_t, s_{t+1}-s_t, s_{t+2}-s_t
    assert f[4].tolist() == [4.0, -1.0, 0.0, 0.0]  # past the end: no motion
    assert f[0].tolist() == [0.0, 0.0, 1.0, 2.0]


def test_recovers_the_actions_of_unseen_trajectories():
    torch.manual_seed(0)
    train = [lagging_arm(seed) for seed in range(8)]
    idm = fit_state_idm(train, noise=0.0, steps=300, seed=0)
    test = [lagging_arm(seed) for seed in range(100, 104)]
    real = torch.cat([a for _, a in test])
    inferred = torch.cat([idm.infer(s) for s, _ in test])
    mean = torch.cat([a for _, a in train]).mean(0)
    err, baseline = (inferred - real).abs().mean(), (mean - real).abs().mean()
    assert err < 0.25 * baseline, dict(err=float(err), mean=float(baseline))
    assert inferred.min() >= real.min() - 0.05 and inferred.max() <= 1.0  # inside the demos' action range
    report = heldout_error(train, heldout=2, noise=0.0, steps=300)
    assert report["heldout_episodes"] == 2 and report["mae"] < 0.25 * report["mean_action_mae"], report


def test_weights_and_normalization_round_trip():
    idm = fit_state_idm([lagging_arm(0), lagging_arm(1)], steps=5)
    saved = idm.state_dict_with_config()
    copy = StateInverseDynamics(type(idm.config)(**saved["config"]))
    copy.load_state_dict(saved["weights"])
    states = lagging_arm(7)[0]
    assert torch.equal(copy.infer(states), idm.infer(states))

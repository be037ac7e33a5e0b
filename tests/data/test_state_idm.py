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
    """Measured (300 steps, seeds 0-2): error / mean-action error 0.11; trained one step out of
    alignment (state t+1 paired with action t) 0.25, so the bound catches an off-by-one."""
    train = [lagging_arm(seed) for seed in range(8)]
    idm = fit_state_idm(train, noise=0.0, steps=300, seed=0)
    test = [lagging_arm(seed) for seed in range(100, 104)]
    real = torch.cat([a for _, a in test])
    inferred = torch.cat([idm.infer(s) for s, _ in test])
    mean = torch.cat([a for _, a in train]).mean(0)
    err, baseline = (inferred - real).abs().mean(), (mean - real).abs().mean()
    assert err < 0.15 * baseline, dict(err=float(err), mean=float(baseline))
    report = heldout_error(train, heldout=2, noise=0.0, steps=300)
    assert report["heldout_episodes"] == 2 and report["mae"] < 0.2 * report["mean_action_mae"], report


def test_actions_stay_inside_the_demos_range_and_the_seed_decides_the_fit():
    train = [lagging_arm(0), lagging_arm(1)]
    idm = fit_state_idm(train, steps=5, seed=3)
    actions = torch.cat([a for _, a in train])
    assert torch.equal(idm.action_low, actions.min(0).values) and torch.equal(idm.action_high, actions.max(0).values)
    wild = idm.infer(lagging_arm(7)[0] * 1000)  # states far outside the demos'
    assert ((wild == idm.action_low) | (wild == idm.action_high)).float().mean() > 0.5
    assert ((wild >= idm.action_low) & (wild <= idm.action_high)).all()
    torch.manual_seed(123)  # the global generator does not matter
    again = fit_state_idm(train, steps=5, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(idm.state_dict().values(), again.state_dict().values()))
    other = fit_state_idm(train, steps=5, seed=4)
    assert not torch.equal(other.net[0].weight, idm.net[0].weight)


def test_a_state_dimension_constant_in_the_demos_does_not_blow_up_read_states():
    """A state dimension the demos never move (here a fourth, always 0) still carries a reader's
    error on videos: its features' scale is floored, so a millimetre there is not a huge input."""
    train = [(torch.cat([s, torch.zeros(len(s), 1)], 1), a) for s, a in (lagging_arm(k) for k in range(6))]
    idm = fit_state_idm(train, noise=0.05, steps=300, seed=0)
    states, real = lagging_arm(100)
    clean = idm.infer(torch.cat([states, torch.zeros(len(states), 1)], 1))
    read = idm.infer(torch.cat([states, torch.full((len(states), 1), 1e-3)], 1))
    assert (read - clean).abs().mean() < 0.1 * (clean - real.mean(0)).abs().mean() + 0.05


def test_weights_and_normalization_round_trip():
    idm = fit_state_idm([lagging_arm(0), lagging_arm(1)], steps=5)
    copy = StateInverseDynamics.from_saved(idm.state_dict_with_config())
    states = lagging_arm(7)[0]
    assert torch.equal(copy.infer(states), idm.infer(states))

"""Weighted mixtures: proportions, resumable state, rank shards, loaders with workers, config errors."""

from __future__ import annotations

import logging

import pytest

from vidact.data.config import DataConfig, SourceConfig
from vidact.data.mixture import MixtureSampler, SourceCounter, build_loader, build_sources, robot_stats
from vidact.models.configuration import VidActConfig


def test_weights_set_proportions():
    s = MixtureSampler([10, 500], [0.7, 0.3], seed=0, names=["web", "robot"], samples_per_epoch=4000)
    list(s)
    counts = s.counts()
    assert counts["web"] / 4000 == pytest.approx(0.7, abs=0.03)


def test_resume_continues_the_same_stream():
    full = list(MixtureSampler([7, 30], [1, 2], seed=5, samples_per_epoch=9000))
    first = MixtureSampler([7, 30], [1, 2], seed=5, samples_per_epoch=5000)
    head = list(first)
    resumed = MixtureSampler([7, 30], [1, 2], seed=5, samples_per_epoch=4000)
    resumed.load_state_dict(first.state_dict())  # crosses a 4096-draw block boundary
    assert head + list(resumed) == full
    with pytest.raises(ValueError, match="seed 5"):
        MixtureSampler([7, 30], [1, 2], seed=6).load_state_dict(first.state_dict())


def test_ranks_read_disjoint_shards_covering_each_source():
    per_rank = [[(src, i) for src, i, _ in MixtureSampler([12], [1.0], rank=r, world_size=3, samples_per_epoch=4)]
                for r in range(3)]
    items = [x for rank in per_rank for x in rank]
    assert sorted(items) == [(0, i) for i in range(12)]  # one pass: every item once, on one rank


def test_passes_reshuffle_and_report_epoch():
    out = list(MixtureSampler([5], [1.0], seed=0, samples_per_epoch=10))
    assert sorted(i for _, i, e in out if e == 0) == list(range(5))
    assert [e for *_, e in out] == [0] * 5 + [1] * 5


def mixture_cfg(synthetic_dataset, video_dir, **kw) -> DataConfig:
    return DataConfig(kind="mixture", num_workers=kw.pop("num_workers", 0), sources=[
        SourceConfig(kind="webvideo", path=str(video_dir / "manifest.jsonl"), weight=0.7, name="web", fps=6.0),
        SourceConfig(kind="lerobot", path=str(synthetic_dataset), weight=0.3, name="robot",
                     camera_keys=["observation.images.a"]),
    ], **kw)


MODEL = dict(height=24, width=24, views=1, history=2, future_frames=1, future_frame_stride=2, chunk_length=4,
             state_dim=3, action_dim=2)


def test_loader_mixes_robot_and_web_video_with_workers(synthetic_dataset, video_dir, caplog):
    cfg = mixture_cfg(synthetic_dataset, video_dir, num_workers=2)
    loader, sampler = build_loader(cfg, VidActConfig(**MODEL), batch_size=8, samples_per_epoch=48)
    counter = SourceCounter(every=2)
    with caplog.at_level(logging.INFO, logger="vidact.data.mixture"):
        batches = list(loader)
        for b in batches:
            counter.update(b)
    assert len(batches) == 6
    for b in batches:
        for src, has in zip(b.source, b.has_actions.tolist()):
            assert has == (src == "robot")
    assert set(counter.totals) == {"web", "robot"} and sum(counter.totals.values()) == 48
    assert any("data sources after" in r.getMessage() for r in caplog.records)
    assert sampler.consumed == 48


def test_workers_leave_ctrl_c_to_the_trainer(synthetic_dataset, video_dir):
    """A terminal's Ctrl-C reaches the data workers too; they must go on serving batches so the
    trainer can reach its step boundary and checkpoint (vidact.lit.signals). A worker that took it
    would leave its loop, and the next batch past the prefetched ones would fail."""
    import os
    import signal

    cfg = mixture_cfg(synthetic_dataset, video_dir, num_workers=2)
    loader, _ = build_loader(cfg, VidActConfig(**MODEL), batch_size=2, samples_per_epoch=40)
    batches = iter(loader)
    next(batches)
    for worker in batches._workers:
        os.kill(worker.pid, signal.SIGINT)
    assert len(list(batches)) == 19  # past the 2 x 2 prefetched batches
    del batches


def test_a_source_restricted_to_some_modes_rehearses_only_those(synthetic_dataset, video_dir):
    """data.sources[i].modes: the robot source's samples train forward dynamics only (e.g. rollouts of
    failing policies: what their actions do, never imitated); the other source draws from the
    recipe's weights as before."""
    import torch

    from vidact.generative.schedule import GenerativeConfig, Mode, draw_modes

    cfg = mixture_cfg(synthetic_dataset, video_dir)
    cfg.sources[1].modes = ["forward_dynamics"]
    loader, _ = build_loader(cfg, VidActConfig(**MODEL), batch_size=8, samples_per_epoch=64)
    gen = GenerativeConfig()
    drawn = {"web": set(), "robot": set()}
    for b in loader:
        for src, mode in zip(b.source, draw_modes(b.has_actions, gen, torch.Generator().manual_seed(0),
                                                 allowed=b.modes)):
            drawn[src].add(mode)
    assert drawn == {"web": {Mode.VIDEO}, "robot": {Mode.FORWARD_DYNAMICS}}
    # Unrestricted samples keep the recipe's draw, and its random stream.
    has = torch.ones(400, dtype=torch.bool)
    free = draw_modes(has, gen, torch.Generator().manual_seed(1))
    assert draw_modes(has, gen, torch.Generator().manual_seed(1), allowed=[None] * 400) == free
    assert len(set(free)) == 4
    two = draw_modes(has, gen, torch.Generator().manual_seed(1), allowed=[("policy", "forward_dynamics")] * 400)
    assert set(two) == {Mode.POLICY, Mode.FORWARD_DYNAMICS}
    # Restricted to modes the recipe gives no weight (video here): drawn equally among them.
    assert set(draw_modes(has, gen, torch.Generator().manual_seed(1), allowed=[("video",)] * 400)) == {Mode.VIDEO}
    with pytest.raises(ValueError, match=r"data.sources\[0\].modes: \['imitate'\] are not modes"):
        DataConfig(kind="mixture", sources=[SourceConfig(path="x", modes=["imitate"])])


def test_robot_stats_for_the_run(synthetic_dataset, video_dir):
    cfg = mixture_cfg(synthetic_dataset, video_dir)
    datasets, names, weights = build_sources(cfg, VidActConfig(**MODEL))
    assert names == ["web", "robot"] and weights == [0.7, 0.3]
    stats = robot_stats(cfg, datasets)
    assert len(stats["state"]["mean"]) == 3 and len(stats["action"]["q99"]) == 2


@pytest.mark.parametrize("kw,message", [
    (dict(kind="video"), "data.kind='video' is not one of"),
    (dict(kind="mixture"), "needs at least one entry in data.sources"),
    (dict(kind="lerobot", sources=[SourceConfig(kind="webvideo", path="m.jsonl")]), "exactly one data.sources"),
    (dict(kind="mixture", sources=[SourceConfig(path="x"), SourceConfig(path="y", weight=0)]),
     r"data.sources\[1\].weight must be > 0"),
    (dict(kind="mixture", sources=[SourceConfig(path="")]), r"data.sources\[0\].path is required"),
    (dict(kind="mixture", sources=[{"kind": "web", "path": "x"}]), r"data.sources\[0\].kind='web'"),
    (dict(stats="file"), "data.stats_path is required"),
    (dict(kind="fake", sources=[SourceConfig(path="x")]), "does not read datasets"),
])
def test_config_errors_name_the_key(kw, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kw)


def test_config_is_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(DataConfig(kind="mixture", sources=[SourceConfig(path="d", weight=2.0)]))
    back = OmegaConf.to_object(OmegaConf.merge(cfg, {"sources": [{"path": "e", "kind": "webvideo"}]}))
    assert isinstance(back.sources[0], SourceConfig) and back.sources[0].kind == "webvideo"


def test_fewer_items_than_a_batch_still_give_batches(synthetic_dataset, video_dir):
    """A manifest of a few videos and a batch larger than it: every pass must still hold a batch
    (with drop_last a pass of fewer samples than the batch held none and training waited forever)."""
    from vidact.lit.datamodule import _Indexed

    cfg = DataConfig(kind="webvideo", num_workers=0, sources=[
        SourceConfig(kind="webvideo", path=str(video_dir / "manifest.jsonl"), fps=6.0)])
    n_videos = len(build_sources(cfg, VidActConfig(**MODEL))[0][0])
    loader, sampler = build_loader(cfg, VidActConfig(**MODEL), batch_size=n_videos + 3)
    assert len(sampler) == n_videos + 3
    stream = iter(_Indexed(loader, 0))
    assert [next(stream)[0] for _ in range(3)] == [0, 1, 2]
    assert next(stream)[1].batch_size == n_videos + 3
    empty = _Indexed(build_loader(cfg, VidActConfig(**MODEL), batch_size=n_videos + 3,
                                  samples_per_epoch=n_videos)[0], 0)
    with pytest.raises(RuntimeError, match="no batch in a whole pass"):
        next(iter(empty))

"""Web video: action-free clips for video pretraining, from a manifest or WebDataset tar shards.

Sources:
- a manifest, ``.jsonl`` (one ``{"path", "caption", "start", "end"}`` object a line) or ``.csv``
  (header ``path,caption[,start,end]``); relative paths resolve against the manifest's folder;
- WebDataset ``.tar`` shards: members grouped by key (``0001.mp4`` + ``0001.txt`` or ``0001.json``
  with a ``caption``). Shards are indexed once (member offsets) and each video is read by seeking
  into the tar, so a shard is never unpacked or held in memory.

A clip is ``history + future_frames`` frames spaced ``future_frame_stride / fps`` seconds apart:
the spacing robot windows have at the robot's control rate, here at a chosen ``fps`` whatever
the source's frame rate. Frames are decoded with torchcodec at their timestamps (only the clip's
frames are decoded, never the whole video), then scaled and cropped to the model resolution.

A missing, truncated or non-video file is skipped: a warning names it and the next entry is
tried. If every entry is unreadable the error says so. Each dataloader worker only sees its own
skips, so the sample that follows a skip names the skipped files (``last_skipped``, carried in
``Batch.skipped_files`` by the mixture) and training aggregates them over workers and ranks
(:class:`vidact.data.mixture.SkippedFiles`, logged as ``data/skipped_files``).

With ``frame_keys`` on (``data.cache_dir`` set), each sample names its frames (file, timestamp,
fit, crop) so a frozen VAE's latents can be cached.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vidact.data.codec import keep_scheduling
from vidact.data.transforms import fit_frames
from vidact.models.configuration import VidActConfig
from vidact.types import BatchKey

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")


@dataclass
class VideoEntry:
    path: str  # a video file, or the tar shard holding it
    caption: str = ""
    start: float | None = None  # seconds; clips are sampled inside [start, end]
    end: float | None = None
    member_offset: int | None = None  # byte offset of the video inside a tar shard
    member_size: int | None = None

    @property
    def label(self) -> str:
        return self.path if self.member_offset is None else f"{self.path}@{self.member_offset}"


def read_manifest(path: str | Path) -> list[VideoEntry]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video manifest {path} does not exist")
    if path.suffix == ".jsonl":
        rows = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{n}: not a JSON object ({e})") from None
    elif path.suffix == ".csv":
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    else:
        raise ValueError(f"video manifest {path}: expected a .jsonl or .csv file")
    entries = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(f"{path}: entry {n} has no 'path'")
        video = Path(row["path"])
        video = video if video.is_absolute() else path.parent / video
        start, end = (float(row[k]) if row.get(k) not in (None, "") else None for k in ("start", "end"))
        if start is not None and end is not None and end <= start:
            raise ValueError(f"{path}: entry {n} has end={end} <= start={start}")
        entries.append(VideoEntry(str(video), str(row.get("caption") or ""), start, end))
    if not entries:
        raise ValueError(f"video manifest {path} lists no videos")
    return entries


def index_shards(shards: list[str | Path]) -> list[VideoEntry]:
    """Video members of WebDataset tar shards with their captions (from ``.txt`` or ``.json``)."""
    entries = []
    for shard in shards:
        shard = Path(shard)
        videos: dict[str, tarfile.TarInfo] = {}
        captions: dict[str, str] = {}
        with tarfile.open(shard, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if "." + ext in VIDEO_SUFFIXES:
                    videos[key] = member
                elif ext in ("txt", "json"):
                    data = tar.extractfile(member).read().decode("utf-8", "replace")
                    captions[key] = json.loads(data).get("caption", "") if ext == "json" else data.strip()
        entries += [VideoEntry(str(shard), captions.get(key, ""), member_offset=m.offset_data, member_size=m.size)
                    for key, m in videos.items()]
    if not entries:
        raise ValueError(f"no video members found in shards {[str(s) for s in shards]}")
    return entries


def write_video(path: str | Path, frames: np.ndarray, fps: float, codec: str = "libx264",
                options: dict[str, str] | None = None) -> Path:
    """Encode uint8 [T,H,W,3] frames to a video file with PyAV (H.264 by default, ``libsvtav1`` for
    AV1; ``options`` go to the encoder, e.g. ``{"crf": "18"}``). Odd sizes are allowed: frames are
    padded by one pixel to the even size yuv420p needs. Written beside ``path`` and renamed, so a
    killed write never leaves a truncated file under the final name."""
    import av
    from fractions import Fraction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    T, H, W, _ = frames.shape
    even = np.pad(frames, ((0, 0), (0, H % 2), (0, W % 2), (0, 0)), mode="edge")
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    with keep_scheduling(), av.open(str(tmp), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = even.shape[2], even.shape[1], "yuv420p"
        if options:
            stream.options = dict(options)
        for frame in even:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    tmp.replace(path)
    return path


class WebVideoDataset(Dataset):
    """Action-free clips shaped for ``model_cfg``; yields batch dicts with ``has_actions=False``."""

    def __init__(self, entries: list[VideoEntry], model_cfg: VidActConfig, *, fps: float = 10.0,
                 fit: str = "center_crop", seed: int = 0, name: str = "webvideo", max_skips: int | None = None):
        if not entries:
            raise ValueError("WebVideoDataset needs at least one video entry")
        if fps <= 0:
            raise ValueError(f"data.fps must be > 0, got {fps}")
        self.entries, self.cfg, self.fps, self.fit, self.seed, self.name = entries, model_cfg, fps, fit, seed, name
        self.clip_frames = model_cfg.history + model_cfg.future_frames
        self.spacing = model_cfg.future_frame_stride / fps  # seconds between clip frames
        self.max_skips = len(entries) if max_skips is None else max_skips
        self.epoch = 0
        self.skipped = 0  # unreadable entries met by this process
        self.last_skipped: list[str] = []  # entries found unreadable by the latest __getitem__
        self.frame_keys = False  # name each frame in the sample (BatchKey.FRAME_KEYS), for the latent cache
        self._bad: set[int] = set()

    @classmethod
    def from_source(cls, source: str | Path | list[str], model_cfg: VidActConfig, **kw) -> "WebVideoDataset":
        """A manifest path, one tar shard, a folder of shards, or a list of shards."""
        if isinstance(source, (list, tuple)):
            return cls(index_shards(list(source)), model_cfg, **kw)
        source = Path(source)
        if source.is_dir():
            shards = sorted(source.glob("*.tar"))
            if not shards:
                raise FileNotFoundError(f"{source} holds no .tar shards")
            return cls(index_shards(shards), model_cfg, **kw)
        if source.suffix == ".tar":
            return cls(index_shards([source]), model_cfg, **kw)
        return cls(read_manifest(source), model_cfg, **kw)

    def set_epoch(self, epoch: int) -> None:
        """Clip start times depend on (seed, epoch, index): reproducible, and new each epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        errors = []
        self.last_skipped = []
        for attempt in range(min(self.max_skips, len(self.entries) - 1) + 1):
            i = (int(idx) + attempt) % len(self.entries)
            if i in self._bad:
                continue
            try:
                return self.load(i)
            except Exception as e:  # any decode failure means "skip this file"; the reason is logged
                self._bad.add(i)
                self.skipped += 1
                self.last_skipped.append(self.entries[i].label)
                errors.append(f"{self.entries[i].label}: {type(e).__name__}: {e}")
                log.warning("skipping unreadable video %s (%s: %s); %d unreadable so far in this process",
                            self.entries[i].label, type(e).__name__, str(e)[:200], self.skipped)
        if len(self._bad) >= len(self.entries):
            raise RuntimeError(f"all {len(self.entries)} videos of '{self.name}' are unreadable; first errors: "
                               + "; ".join(errors[:3]))
        raise RuntimeError(f"'{self.name}': {len(errors)} unreadable videos in a row from index {idx} "
                           f"(max_skips={self.max_skips}); last: {errors[-1] if errors else 'none'}")

    def load(self, i: int) -> dict[str, Any]:
        """One clip from entry ``i``; raises on an unreadable file (``__getitem__`` skips it)."""
        entry = self.entries[i]
        decoder = _open_decoder(entry)
        meta = decoder.metadata
        begin = meta.begin_stream_seconds or 0.0
        end = meta.end_stream_seconds if meta.end_stream_seconds is not None else meta.duration_seconds
        if end is None or meta.num_frames == 0:
            raise ValueError("no decodable video stream")
        lo = max(begin, entry.start or begin)
        hi = min(end, entry.end if entry.end is not None else end)
        if hi <= lo:
            raise ValueError(f"clip range [{lo:.3f}, {hi:.3f}]s is empty (video spans [{begin:.3f}, {end:.3f}]s)")
        span = self.spacing * (self.clip_frames - 1)
        rng = np.random.default_rng((self.seed, self.epoch, i))
        # The last frame must be displayed before `hi`: frames are shown on [pts, pts + duration).
        last = hi - 1e-3
        t0 = lo + rng.uniform(0.0, last - lo - span) if last - lo > span else lo
        times = t0 + self.spacing * np.arange(self.clip_frames)
        is_pad = times > last  # a video shorter than the clip repeats its last frame, flagged as pad
        times = np.minimum(times, last)
        frames = decoder.get_frames_played_at(seconds=times.tolist()).data  # [T,C,h,w] uint8
        if frames.shape[1] == 1:  # grayscale sources
            frames = frames.expand(-1, 3, -1, -1)
        crop_seed = int(rng.integers(2 ** 31))
        gen = torch.Generator().manual_seed(crop_seed)
        frames = fit_frames(frames, self.cfg.height, self.cfg.width, self.fit, generator=gen)
        sample = self._sample(frames[:, None], torch.from_numpy(is_pad), entry.caption)  # V=1
        if self.frame_keys:
            # What fixes each frame's pixels: the file, the timestamp, and the fit (a random crop's offset
            # comes from crop_seed). The resolution is part of the cache namespace (the VAE's identity).
            fit = f"{self.fit}:{crop_seed}" if self.fit == "random_crop" else self.fit
            sample[BatchKey.FRAME_KEYS.value] = [[f"web|{self.name}|{entry.label}|t={t:.6f}|{fit}"] * self.cfg.views
                                                 for t in times.tolist()]
        return sample

    def _sample(self, frames: torch.Tensor, is_pad: torch.Tensor, caption: str) -> dict[str, Any]:
        c, Th = self.cfg, self.cfg.history
        if c.views > 1:  # one camera; the model's other views see the same clip
            frames = frames.expand(-1, c.views, -1, -1, -1)
        sample = {
            BatchKey.OBS_FRAMES.value: frames[:Th].contiguous(),
            BatchKey.OBS_IS_PAD.value: is_pad[:Th],
            BatchKey.STATE.value: torch.zeros(Th, c.state_dim),
            BatchKey.ACTIONS.value: torch.zeros(c.chunk_length, c.action_dim),
            BatchKey.ACTION_IS_PAD.value: torch.ones(c.chunk_length, dtype=torch.bool),  # no real actions
            BatchKey.HAS_ACTIONS.value: False,
            BatchKey.TEXT.value: caption,
            BatchKey.SOURCE.value: self.name,
        }
        if c.future_frames:
            sample[BatchKey.FUTURE_FRAMES.value] = frames[Th:].contiguous()
            sample[BatchKey.FUTURE_IS_PAD.value] = is_pad[Th:]
        return sample


def _open_decoder(entry: VideoEntry):
    from torchcodec.decoders import VideoDecoder

    if entry.member_offset is None:
        source: Any = entry.path
        if not Path(source).is_file():
            raise FileNotFoundError(f"no such file {source}")
    else:
        # Only this member's bytes are read, so memory is bounded by the largest single video.
        with open(entry.path, "rb") as f:
            f.seek(entry.member_offset)
            source = io.BytesIO(f.read(entry.member_size))
    # approximate seek: no up-front scan of the whole file; one ffmpeg thread because loader
    # workers already run in parallel on the CPU cores.
    return VideoDecoder(source, seek_mode="approximate", dimension_order="NCHW", num_ffmpeg_threads=1)

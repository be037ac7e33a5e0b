"""One sampler call captured as a CUDA graph: the prefix pass and every denoising step replayed as
one launch. At batch 1 a chunk is hundreds of small kernels and the GPU waits on Python to launch
them (BENCHMARKS.md: ~95 ms per chunk for S and B eagerly, slower than the CPU for the tiny model).

    graphed = GraphedSampler(sampler, example_batch, Mode.POLICY_FAST)   # on a CUDA device
    out = graphed(batch, noise=initial_noise(model, 1, seed))            # same shapes as the example

A graph is made for one mode, batch shape and step count; the inputs are copied into its own
buffers and its outputs are overwritten by the next call (``__call__`` returns copies).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from vidact.generative.sample import SampleOutput, Sampler, initial_noise
from vidact.generative.schedule import Mode
from vidact.types import Batch


class GraphedSampler:
    def __init__(self, sampler: Sampler, example: Batch, mode: Mode | str, steps: int | None = None,
                 autocast_dtype: torch.dtype | None = None, warmup: int = 2):
        device = example.obs_frames.device
        if device.type != "cuda":
            raise ValueError(f"GraphedSampler needs a batch on a CUDA device, got {device}")
        self.sampler, self.mode, self.steps, self.autocast_dtype = sampler, Mode(mode), steps, autocast_dtype
        self.inputs = _clone(with_text_embeddings(sampler.model, example))
        noise = initial_noise(sampler.model, example.batch_size, 0)
        self.noise = tuple(n.to(device) for n in noise)
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up off the capture: cuBLAS handles, lazily built tables
            for _ in range(warmup):
                self._run()
        torch.cuda.current_stream(device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = self._run()

    def _run(self) -> SampleOutput:
        # autocast's weight-cast cache would hold tensors made during capture: off
        with torch.autocast("cuda", dtype=self.autocast_dtype or torch.bfloat16,
                            enabled=self.autocast_dtype is not None, cache_enabled=False):
            return self.sampler.sample(self.inputs, self.mode, steps=self.steps, noise=self.noise)

    def __call__(self, batch: Batch, noise: tuple[Tensor, Tensor] | None = None, seed: int = 0) -> SampleOutput:
        """``batch`` must have the example's shapes and fields; ``noise`` as ``Sampler.sample``'s."""
        batch = with_text_embeddings(self.sampler.model, batch)
        for field in dataclasses.fields(batch):
            value, buffer = getattr(batch, field.name), getattr(self.inputs, field.name)
            if not isinstance(buffer, Tensor):
                if isinstance(value, Tensor):
                    raise ValueError(f"GraphedSampler: batch field {field.name!r} was None when the graph was made")
                continue
            if not isinstance(value, Tensor) or value.shape != buffer.shape or value.dtype != buffer.dtype:
                got = None if not isinstance(value, Tensor) else f"{list(value.shape)} {value.dtype}"
                raise ValueError(f"GraphedSampler: batch field {field.name!r} must be {list(buffer.shape)} "
                                 f"{buffer.dtype} as when the graph was made, got {got}")
            buffer.copy_(value, non_blocking=True)
        noise = noise if noise is not None else initial_noise(self.sampler.model, batch.batch_size, seed)
        for buffer, value in zip(self.noise, noise):
            buffer.copy_(value, non_blocking=True)
        self.graph.replay()
        out = self.outputs
        copy = lambda t: None if t is None else t.clone()  # noqa: E731
        return SampleOutput(out.mode, copy(out.actions), copy(out.future_frames), copy(out.future_latents))


def with_text_embeddings(model, batch: Batch) -> Batch:
    """``batch`` with its instruction embedded, outside any graph (tokenizing runs on the CPU) and
    padded to the encoder's ``max_length`` as the exported program's are (padded tokens are masked
    out: the same function), so one graph serves every instruction."""
    if batch.text_embeddings is not None or model.text_encoder is None:
        return batch
    from vidact.export.torch_export import text_inputs

    emb, mask = text_inputs(model, list(batch.text))
    device = batch.obs_frames.device
    return dataclasses.replace(batch, text_embeddings=emb.to(device), text_mask=mask.to(device))


def shapes(batch: Batch) -> tuple:
    """What a graph is specific to: every tensor field's name and shape."""
    return tuple((f.name, tuple(v.shape)) for f in dataclasses.fields(batch)
                 if isinstance(v := getattr(batch, f.name), Tensor))


def _clone(batch: Batch) -> Batch:
    return dataclasses.replace(batch, **{f.name: getattr(batch, f.name).clone() for f in dataclasses.fields(batch)
                                         if isinstance(getattr(batch, f.name), Tensor)})

"""Model throughput and latency: training samples/s and tokens/s per flavor, utilization against
this machine's own matmul FLOP/s (measured in the same run), and chunk latency per sampling mode.

    .venv/bin/python bench/bench_model.py --flavors tiny S --batch-size 8 --steps 5
    .venv/bin/python bench/bench_model.py --flavors tiny --dim 128 --depth 4 --heads 4 --batch-size 32  # quickstart
    python bench/bench_model.py --device cuda --precision bf16 --flavors S B L --batch-size 64 --steps 20
    .venv/bin/python bench/bench_model.py --flavors tiny --dim 128 --depth 4 --heads 4 --batch-size 32 --profile

``--profile`` (first flavor only) says where a training step's time goes instead: forward,
backward and optimizer timed apart, then torch.profiler's self time per operator, grouped
(matmul, attention, norms, elementwise, ...), with the FLOP/s the matmuls themselves reach
against the large-matmul rate: what the step would reach if everything but the matmuls were free.

Shapes default to the MetaWorld recipe (96x96, 2 history frames, 1 future frame, 16x4 chunk,
patch 12). FLOPs are counted by torch's FlopCounterMode on one forward+backward; utilization =
(FLOPs per step / seconds per step) / (FLOP/s of a large matmul in the same precision, measured on
the same device in the same run). On a GPU, ``--peak-tflops`` (the card's dense bf16 peak from its
datasheet, e.g. 989 for H100/H200 SXM) adds model FLOPs utilization against that figure.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from vidact.data.fake import fake_batch
from vidact.generative import GenerativeConfig, Mode, Sampler, SamplerConfig, training_loss
from vidact.generative.sample import initial_noise
from vidact.models import VidAct, VidActConfig
from vidact.models.configuration import FrameTokenizerConfig


def matmul_flops(device: str, dtype: torch.dtype = torch.float32, reps: int = 20) -> float:
    n = 8192 if device.startswith("cuda") else 1024
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_config(flavor: str, args) -> VidActConfig:
    return VidActConfig(flavor=flavor, dim=args.dim, depth=args.depth, heads=args.heads, height=args.size,
                        width=args.size, history=args.history, future_frames=args.future_frames,
                        chunk_length=args.chunk, state_dim=4, action_dim=4,
                        frame_tokenizer=FrameTokenizerConfig(kind="patch", patch_size=args.patch))


# --variants: kernel choices on the same model (vidact.models.transformer.Transformer's attributes),
# "+"-joined: base (SDPA with a boolean mask, gathered AdaLN conditions, norms as autocast runs them:
# the code before issue 18's GPU work), norms (norms in the compute dtype), gather (conditions
# expanded by a one-hot matmul), flex (FlexAttention), compile (torch.compile of the model's forward).
VARIANT_TOKENS = ("base", "norms", "gather", "flex", "compile")


def apply_variant(model: VidAct, variant: str | None) -> bool:
    """Set ``variant``'s kernels on ``model``; True when it asks for compilation."""
    if variant is None:
        return False
    tokens = variant.split("+")
    unknown = set(tokens) - set(VARIANT_TOKENS)
    if unknown:
        raise SystemExit(f"--variants: unknown {sorted(unknown)}; known: {', '.join(VARIANT_TOKENS)}")
    bb = model.backbone
    bb.fast_norms = "norms" in tokens
    bb.cond_gather = "matmul" if "gather" in tokens else "index"  # explicit either way (the default is "auto")
    bb.attention_backend = "flex" if "flex" in tokens else "sdpa"
    return "compile" in tokens


def training_setup(flavor: str, args):
    """A seeded model of ``flavor``, a fake batch, the loss config and AdamW."""
    torch.manual_seed(0)
    cfg = model_config(flavor, args)
    model = VidAct(cfg).to(args.device)
    args.compile_model = apply_variant(model, getattr(args, "variant", None))
    batch = fake_batch(cfg, args.batch_size).to(args.device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return cfg, model, batch, GenerativeConfig(), opt


def training_step(model, batch, gen, opt, autocast):
    """One forward + backward + AdamW step under ``autocast``, as a closure."""
    def step():
        with autocast:
            out = training_loss(model, batch, gen)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    return step


def bench_flavor(flavor: str, args, peak: float) -> dict:
    cfg, model, batch, gen, opt = training_setup(flavor, args)
    autocast = torch.autocast(args.device.split(":")[0], dtype=torch.bfloat16, enabled=args.precision == "bf16")
    step = training_step(model, batch, gen, opt, autocast)
    flex = model.backbone.attention_backend
    model.backbone.attention_backend = "sdpa"  # FLOPs counted on the reference path (flex hides its matmuls)
    with FlopCounterMode(display=False) as counter, autocast:
        out = training_loss(model, batch, gen, torch.Generator().manual_seed(0))
    with FlopCounterMode(display=False) as backward_counter:
        out.loss.backward()
    flops = counter.get_total_flops() + backward_counter.get_total_flops()
    model.backbone.attention_backend = flex
    compiled = args.compile or args.compile_model
    if args.compile:  # after the FLOP count: compiled before it, the step ran at eager speed (measured on CPU)
        model.backbone.compile()
    if args.compile_model:
        model.compile()
    t_compile = time.perf_counter()
    for _ in range(3 if compiled or flex == "flex" else 1):
        step()
    sync(args.device)
    t_compile = time.perf_counter() - t_compile
    sync(args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(args.device)
    dt = (time.perf_counter() - t0) / args.steps
    memory = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
    tokens = len(model.embed_prefix(batch).layout) + model.future_tokens + cfg.chunk_length

    del opt
    model = uncompiled(model)
    model.eval()
    one = fake_batch(cfg, 1).to(args.device)
    latency = {}
    for mode in (Mode.POLICY_FAST, Mode.POLICY) if args.latency_reps else ():
        sampler = Sampler(model, SamplerConfig(steps=args.sample_steps))
        with autocast:
            sampler.sample(one, mode)
        sync(args.device)
        t0 = time.perf_counter()
        for _ in range(args.latency_reps):
            with autocast:
                sampler.sample(one, mode)
        sync(args.device)
        latency[mode.value] = 1000 * (time.perf_counter() - t0) / args.latency_reps
        if args.device.startswith("cuda"):  # the same call replayed as one CUDA graph
            from vidact.generative.graphs import GraphedSampler

            graphed = GraphedSampler(sampler, one, mode, autocast_dtype=torch.bfloat16 if args.precision == "bf16" else None)
            noise = initial_noise(model, 1, 7)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16", cache_enabled=False):
                eager = sampler.sample(one, mode, noise=noise)
            diff = (graphed(one, noise).actions - eager.actions).abs().max().item()
            print(f"  {flavor} {mode.value}: CUDA graph vs eager, same noise: max |action difference| {diff:.2e}")
            t0 = time.perf_counter()
            for _ in range(args.latency_reps):
                graphed(one)
            sync(args.device)
            latency[f"graph_{mode.value}"] = 1000 * (time.perf_counter() - t0) / args.latency_reps
    if (args.dim, args.depth, args.heads) != (None, None, None):
        flavor = f"{flavor} (dim {cfg.size[0]}, depth {cfg.size[1]}, heads {cfg.size[2]})"
    return dict(flavor=flavor, params=model.num_parameters(True), tokens=tokens, step_s=dt, compile_s=t_compile,
                samples_s=args.batch_size / dt, tokens_s=args.batch_size * tokens / dt,
                flops=flops, util=flops / dt / peak, mfu=flops / dt / (args.peak_tflops * 1e12) if args.peak_tflops else None,
                memory_gib=memory, **{f"ms_{k}": latency.get(k, float("nan"))
                                      for k in ("policy_fast", "policy", "graph_policy_fast", "graph_policy")})


def uncompiled(model: VidAct) -> VidAct:
    """The model without ``Module.compile``'s wrapper (the sampler's shapes change every call)."""
    model._compiled_call_impl = None
    model.backbone._compiled_call_impl = None
    return model


# torch.profiler operator names -> groups (first match wins; the rest is "other")
GROUPS = (("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
          ("attention", ("scaled_dot_product", "attention")),
          ("convolution", ("convolution",)),
          ("norm", ("layer_norm", "rms_norm", "group_norm")),
          ("optimizer (fused AdamW ops)", ("_foreach", "_fused_adam", "addcdiv", "addcmul", "lerp")),
          ("activations", ("gelu", "silu", "sigmoid", "tanh", "softmax")),
          ("elementwise", ("aten::add", "aten::mul", "aten::sub", "aten::div", "aten::neg", "aten::pow", "aten::sqrt",
                           "aten::rsqrt", "aten::exp", "aten::where", "aten::fill_", "aten::zero_", "aten::clamp")),
          ("copies and layout", ("copy_", "aten::cat", "aten::clone", "aten::contiguous", "aten::index",
                                 "aten::gather", "aten::scatter", "aten::expand", "aten::repeat", "aten::stack",
                                 "aten::empty", "aten::to", "aten::_to_copy")),
          ("reductions", ("aten::sum", "aten::mean", "aten::var", "aten::std", "aten::max", "aten::min",
                          "aten::abs", "aten::norm")))


def group_of(name: str) -> str:
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


def profile_step(flavor: str, args, peak: float) -> None:
    """Where one training step's time goes (``--profile``)."""
    from torch.profiler import ProfilerActivity, profile

    cfg, model, batch, gen, opt = training_setup(flavor, args)
    flops = FlopCounterMode(display=False)
    with flops:  # counted eagerly, before any compile
        training_loss(model, batch, gen).loss.backward()
    if args.compile:
        model.backbone.compile()  # as train.compile does
    phases = {"forward (loss)": 0.0, "backward": 0.0, "optimizer": 0.0}

    def step(timed: bool = False) -> None:
        t0 = time.perf_counter()
        out = training_loss(model, batch, gen)
        t1 = time.perf_counter()
        opt.zero_grad()
        out.loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if timed:
            for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                phases[k] += dt / args.steps

    for _ in range(3 if args.compile else 2):
        step()
    for _ in range(args.steps):
        step(timed=True)
    total = sum(phases.values())
    print(f"\nprofile of {flavor} (dim {cfg.size[0]}, depth {cfg.size[1]}), batch {args.batch_size}, "
          f"{args.steps} steps, {torch.get_num_threads()} thread(s){', backbone compiled' if args.compile else ''}: "
          f"{1000 * total:.0f} ms/step, {100 * flops.get_total_flops() / total / peak:.0f}% of the measured matmul rate")
    print("| phase | ms/step | share |\n|---|---:|---:|")
    for k, v in phases.items():
        print(f"| {k} | {1000 * v:.1f} | {100 * v / total:.0f}% |")

    with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
        for _ in range(args.steps):
            step()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    profiled = sum(e.self_cpu_time_total for e in events)  # microseconds over all steps
    groups: dict[str, list[float]] = {}
    for e in events:
        g = groups.setdefault(group_of(e.key), [0.0, 0.0, 0])
        g[0] += e.self_cpu_time_total
        g[1] += e.flops or 0
        g[2] += e.count
    print(f"\nself time by operator group (torch.profiler, {profiled / args.steps / 1000:.0f} ms/step profiled; "
          f"the profiler's own overhead included):")
    print("| group | ms/step | share | calls/step | GFLOP/s | vs measured matmul |\n|---|---:|---:|---:|---:|---:|")
    for name, (us, flops, count) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        rate = flops / (us / 1e6) if flops else 0.0
        print(f"| {name} | {us / args.steps / 1000:.1f} | {100 * us / profiled:.0f}% | {count // args.steps} | "
              + (f"{rate / 1e9:.1f} | {100 * rate / peak:.0f}% |" if flops else "- | - |"))
    us, flops, _ = groups.get("matmul", [0.0, 0.0, 0])
    if flops:
        print(f"\nif every other operator were free, the step would run at its matmuls' rate: "
              f"{100 * flops / (us / 1e6) / peak:.0f}% of the measured matmul rate")
    print("\ntop operators by self time:\n| operator | group | ms/step | calls/step |\n|---|---|---:|---:|")
    for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:15]:
        print(f"| {e.key} | {group_of(e.key)} | {e.self_cpu_time_total / args.steps / 1000:.1f} | "
              f"{e.count // args.steps} |")


def profile_cuda(flavor: str, args) -> None:
    """``--profile`` on a GPU: the training step's kernels by GPU time (torch.profiler), under the
    bench's precision and the first ``--variants`` entry's kernels."""
    from torch.profiler import ProfilerActivity, profile

    args.variant = args.variants[0] if args.variants else None
    cfg, model, batch, gen, opt = training_setup(flavor, args)
    step = training_step(model, batch, gen, opt,
                         torch.autocast("cuda", dtype=torch.bfloat16, enabled=args.precision == "bf16"))
    for _ in range(3):
        step()
    sync(args.device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(args.steps):
            step()
        sync(args.device)
    print(f"\nprofile of {flavor}, batch {args.batch_size}, kernels {args.variant or 'default'}, {args.steps} steps:")
    print(prof.key_averages().table(sort_by="self_device_time_total", row_limit=30, max_name_column_width=70))


def sweep(args, peak: float) -> None:
    """Step time and memory as one shape knob moves away from the defaults, the others held."""
    import copy

    print(f"\nscaling, flavor {args.flavors[0]}, batch {args.batch_size} "
          f"(defaults: size {args.size}, history {args.history}, future frames {args.future_frames}, chunk {args.chunk})")
    print("| knob | value | tokens/sample | s/step | samples/s | peak GiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for item in args.sweep:
        knob, values = item.split("=")
        for value in values.split(","):
            run = copy.copy(args)
            setattr(run, knob, int(value))
            run.latency_reps = 0
            r = bench_flavor(args.flavors[0], run, peak)
            print(f"| {knob} | {value} | {r['tokens']} | {r['step_s']:.4f} | {r['samples_s']:.1f} | "
                  f"{r['memory_gib']:.2f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flavors", nargs="+", default=["tiny", "S"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--history", type=int, default=2, help="observed frames")
    p.add_argument("--future-frames", type=int, default=1)
    p.add_argument("--chunk", type=int, default=16, help="action chunk length")
    p.add_argument("--sweep", nargs="*", default=[], metavar="KNOB=V1,V2",
                   help="after the table, vary one knob at a time (size, history, future_frames, chunk) "
                        "for the first flavor, e.g. --sweep size=96,192 chunk=16,64")
    p.add_argument("--patch", type=int, default=12)
    p.add_argument("--dim", type=int, default=None, help="override the flavor's width (e.g. the quickstart: 128)")
    p.add_argument("--depth", type=int, default=None, help="override the flavor's depth (the quickstart: 4)")
    p.add_argument("--heads", type=int, default=None, help="override the flavor's heads (the quickstart: 4)")
    p.add_argument("--sample-steps", type=int, default=10)
    p.add_argument("--latency-reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="32", choices=["32", "bf16"], help="bf16: autocast, as bf16-mixed training")
    p.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    p.add_argument("--variants", nargs="*", default=[], metavar="K1+K2",
                   help=f"kernel choices, each measured on every flavor: {'+'.join(VARIANT_TOKENS)} "
                        "(e.g. base norms+gather norms+gather+flex+compile)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense peak, for MFU")
    p.add_argument("--profile", action="store_true", help="where the first flavor's training step spends its time "
                   "(fp32 on CPU) instead of the table")
    args = p.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
    peak = matmul_flops(args.device, dtype)
    print(f"device {args.device} ({torch.cuda.get_device_name() if args.device.startswith('cuda') else 'CPU'}), "
          f"threads {torch.get_num_threads()}, torch {torch.__version__}, precision {args.precision}"
          f"{', compiled' if args.compile else ''}, batch {args.batch_size}, {args.size}x{args.size}, "
          f"measured {dtype} matmul {peak / 1e12:.3f} TFLOP/s")
    if args.profile:
        if args.device.startswith("cuda"):
            profile_cuda(args.flavors[0], args)
        else:
            profile_step(args.flavors[0], args, peak)
        return
    mfu = " | MFU vs {:.0f} TFLOP/s".format(args.peak_tflops) if args.peak_tflops else ""
    cuda = args.device.startswith("cuda")
    graphs = " | policy_fast ms, CUDA graph | policy ms, CUDA graph" if cuda and args.latency_reps else ""
    print("| flavor | kernels | trainable params | tokens/sample | GFLOP/step | s/step | samples/s | tokens/s | "
          f"utilization vs measured matmul{mfu} | peak GiB | warm-up s | policy_fast ms/chunk ({args.sample_steps} steps) "
          f"| policy ms/chunk{graphs} |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if mfu else "") + "---:|---:|---:|---:|"
          + ("---:|---:|" if graphs else ""))
    for flavor in args.flavors:
        for variant in args.variants or [None]:
            args.variant = variant
            try:
                r = bench_flavor(flavor, args, peak)
            except Exception as e:  # one variant failing (a compile error, out of memory) leaves the others
                print(f"| {flavor} | {variant} | failed: {type(e).__name__}: {str(e).splitlines()[0][:200]} |", flush=True)
                if cuda:
                    torch.cuda.empty_cache()
                continue
            mfu_cell = f" {100 * r['mfu']:.1f}% |" if mfu else ""
            graph_cells = f" {r['ms_graph_policy_fast']:.1f} | {r['ms_graph_policy']:.1f} |" if graphs else ""
            print(f"| {r['flavor']} | {variant or 'default'} | {r['params'] / 1e6:.2f}M | {r['tokens']} | "
                  f"{r['flops'] / 1e9:.1f} | {r['step_s']:.4f} | {r['samples_s']:.1f} | {r['tokens_s']:.0f} | "
                  f"{100 * r['util']:.1f}% |{mfu_cell} {r['memory_gib']:.2f} | {r['compile_s']:.0f} | "
                  f"{r['ms_policy_fast']:.1f} | {r['ms_policy']:.1f} |{graph_cells}", flush=True)
            if cuda:
                torch.cuda.empty_cache()
    if args.sweep:
        sweep(args, peak)


if __name__ == "__main__":
    main()

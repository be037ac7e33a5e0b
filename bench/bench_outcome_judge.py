"""A judge taught by outcomes (issue 13): does policy evaluation inside the world model rank
policies as MetaWorld does once the judge has seen closed-loop imagined episodes labelled with what
really happened from the same start?

The in-model evaluation's judge was trained on real frames and on frames imagined from recorded
actions a few chunks deep. Closed loop, imagination runs 25 frames deep and degrades (blur, colour
drift) in ways the judge reads as success: the untrained policy "succeeds" 42 of 60 times inside
the model (BENCHMARKS.md "The world model as a simulator"). Here the judge is fine-tuned on the
imagined episodes themselves, each labelled from its real twin (the same policy from the same
scene, whose MetaWorld outcome is already measured): a failure is 0 throughout, a success done
from its real success step on (``vidact.worldmodel.judge.outcome_labels``).

Validation without leaks: the judge that scores policy P's episodes from the even (odd) starts is
fine-tuned only on other policies' episodes from the odd (even) starts: it has seen neither this
policy nor these scenes. Two folds x one judge per policy.

    MUJOCO_GL=egl HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 .venv/bin/python bench/bench_outcome_judge.py \\
        --policies s250=${W}_step250 ... s3000=$W --real s250=outputs/plan/wm_eval/s250/TASK/real ... \\
        --world-model $W --dataset outputs/plan/starts/TASK --base-data outputs/wm/data \\
        --tasks button-press-topdown-v3 drawer-open-v3 door-open-v3 --out outputs/plan/outcome_judge

Stages (each skipped when its file exists, so a cut run resumes): (1) every policy's imagined
episodes on every task, run to ``--max-steps`` without stopping at the judged success (the frames,
the world-model judge's done probabilities): OUT/episodes/POLICY/TASK.pt; ``--part i/n`` runs only
every n-th job, for one process per core; (2) the fine-tuned judges and their verdicts:
OUT/results.json (per-episode scores included), results.md, scatter_*.png, beside the world model's
own judge on the same episodes (the probabilities the imagined run computed). Each judge is read
with two rules (``RULES``): the in-model evaluation's own (success at the first frame over 0.5) and
the episode's end (the mean of the last three frames over 0.5). ``--episodes-dir`` reuses the
imagined episodes of another OUT (to fine-tune differently without imagining again)."""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_world_model_eval import pearson, scatter, spearman  # noqa: E402


def episodes_dir(args) -> Path:
    return Path(args.episodes_dir or Path(args.out) / "episodes")


def imagine_stage(args, policies: dict[str, str], out: Path) -> None:
    from vidact.cli import build_parser
    from vidact.data.robot import RobotDataset
    from vidact.deploy.sim import load_policy, set_threads
    from vidact.generative.sample import Sampler
    from vidact.worldmodel.env import check_compatible, imagine_episodes, load_world, start_episodes

    from lerobot.envs.metaworld import TASK_DESCRIPTIONS

    set_threads(1)
    jobs = [(label, task) for label in policies for task in args.tasks]
    index, parts = map(int, args.part.split("/"))
    model = None
    for label, task in jobs[index::parts]:
        path = episodes_dir(args) / label / f"{task}.pt"
        if path.is_file():
            continue
        if model is None:
            model, sampler_cfg, judge = load_world(args.world_model, args.imagine_steps)
            if args.action_guidance is not None:
                sampler_cfg.action_guidance = args.action_guidance
            sampler = Sampler(model, sampler_cfg)
        cli = ["eval", policies[label], "--task", task, "--threads", "1", "--out", str(out)]  # --out unused
        if args.noise_scale is not None:
            cli += ["--noise-scale", str(args.noise_scale)]
        policy = load_policy(build_parser().parse_args(cli))
        check_compatible(policy, model)
        dataset = RobotDataset(args.dataset.replace("TASK", task), model.config)
        if args.episodes > len(dataset.episode_lengths):
            raise SystemExit(f"--episodes {args.episodes}: {args.dataset.replace('TASK', task)} holds "
                             f"{len(dataset.episode_lengths)} scenes (one episode per scene, or twins would repeat)")
        starts = start_episodes(dataset, TASK_DESCRIPTIONS[task], args.episodes)
        t, records = time.time(), []
        for lo in range(0, args.episodes, args.batch_size):  # vidact eval --env world_model's batching and seeds
            records += imagine_episodes(policy, sampler, judge, starts[lo: lo + args.batch_size], args.max_steps,
                                        100_000 * (lo // args.batch_size), keep_frames=args.batch_size,
                                        stop_on_success=False, tail=args.chunk_tail)
        frames = torch.stack([(r["frames"][:, 0] * 255).round().to(torch.uint8) for r in records])  # [E,1+G,C,H,W]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"frames": frames, "text": TASK_DESCRIPTIONS[task], "stride": model.config.future_frame_stride,
                    "starts": [r["start_episode"] for r in records],
                    "done_curve": torch.tensor([r["done_curve"] for r in records]),
                    "success": [r["success"] for r in records]}, path)
        print(f"{label} {task}: {sum(r['success'] for r in records)}/{len(records)} by the world model's judge, "
              f"{(time.time() - t) / len(records):.1f} s per episode", flush=True)


def real_outcomes(args, real: dict[str, str], label: str, task: str) -> dict[int, tuple[bool, int]]:
    """{start episode: (success, length)} of the MetaWorld evaluation of LABEL on TASK. The starts
    dataset's episode i is the scene of seed base + i, as the evaluation's seeds run."""
    folder = Path(real[label].replace("TASK", task))
    res = json.loads((folder / "results.json").read_text())
    made = (res["task"], res["max_steps"], res["sampler"]["noise_scale"])
    if made != (task, args.max_steps, args.noise_scale):
        raise SystemExit(f"--real {label}: {folder} is {made} (task, max steps, noise scale), not "
                         f"{(task, args.max_steps, args.noise_scale)}")
    base = res["seeds"][0]
    gen = json.loads((Path(args.dataset.replace("TASK", task)) / "meta" / "vidact_generation.json").read_text())
    if gen["config"]["seed"] != base or not gen["config"]["keep_failed"]:
        raise SystemExit(f"--dataset for {task}: generated from seed {gen['config']['seed']} (keep_failed "
                         f"{gen['config']['keep_failed']}), but the real results start at seed {base}: the scenes differ")
    return {e["seed"] - base: (bool(e["success"]), int(e["length"])) for e in res["per_episode"]}


def judge_stage(args, policies: dict[str, str], real: dict[str, str], out: Path) -> dict:
    from vidact.data.robot import RobotDataset
    from vidact.worldmodel.imagine import load_model
    from vidact.worldmodel.judge import (Judge, JudgeData, auc, concat_data, find_judge, judge_data, outcome_labels,
                                         train_judge)
    torch.set_num_threads(1)
    base_judge = Judge.load(args.init_judge or find_judge(args.world_model))
    gamma = base_judge.config.gamma
    eps = {(label, task): torch.load(episodes_dir(args) / label / f"{task}.pt") for label in policies
           for task in args.tasks}
    outcome = {(label, task): real_outcomes(args, real, label, task) for label in policies for task in args.tasks}
    base = None
    if args.base_data:
        model, _ = load_model(args.world_model)
        base = judge_data([RobotDataset(d, model.config) for d in args.base_data], gamma, args.base_every)

    def episode_data(keys, parity) -> JudgeData:
        frames, texts, value, done, ok, state = [], [], [], [], [], []
        for key in keys:
            e = eps[key]
            for i, start in enumerate(e["starts"]):
                if start % 2 != parity:
                    continue
                success, length = outcome[key][start]
                f = e["frames"][i]
                v, d = outcome_labels(len(f), e["stride"], success, length, gamma)
                frames.append(f)
                texts += [e["text"]] * len(f)
                value.append(v)
                done.append(d)
                ok.append(torch.full((len(f),), success))
                # the state head keeps the world model's judge's reading (no real state for imagined frames)
                state.append(base_judge.predict_state(f, [e["text"]] * len(f)))
        return JudgeData(torch.cat(frames), texts, torch.cat(value), torch.cat(done), torch.cat(ok), torch.cat(state))

    def verdicts(judge, key, parity) -> dict[int, torch.Tensor]:
        """{start: the judge's done probability at every imagined frame}"""
        e = eps[key]
        return {start: judge.predict(e["frames"][i][1:], [e["text"]] * (len(e["frames"][i]) - 1))[1]
                for i, start in enumerate(e["starts"]) if start % 2 == parity}

    # The world model's judge: the probabilities the imagined run computed (the judge that drove it).
    scored: dict[str, dict] = {"world model's judge": {}, "outcome judge": {}}
    for key, e in eps.items():
        scored["world model's judge"][key] = {start: e["done_curve"][i].float() for i, start in enumerate(e["starts"])}
    folds = []
    t = time.time()
    for held in policies:
        for parity in (0, 1):
            train_keys = [k for k in eps if k[0] != held]
            data = episode_data(train_keys, 1 - parity)
            if base is not None:
                data = concat_data([data, base])
            judge = train_judge(data, copy.deepcopy(base_judge.config), steps=args.finetune_steps, lr=args.lr, seed=args.seed,
                                init=base_judge)
            fold = {}
            for task in args.tasks:
                fold[(held, task)] = verdicts(judge, (held, task), parity)
                scored["outcome judge"].setdefault((held, task), {}).update(fold[(held, task)])
            peaks = torch.tensor([float(v.max()) for f in fold.values() for v in f.values()])
            truth = torch.tensor([outcome[k][s][0] for k, f in fold.items() for s in f])
            folds.append({"held_out_policy": held, "start_parity": parity, "frames": len(data.texts),
                          "episode_auc": auc(peaks, truth)})
            print(f"judge without {held} (scoring starts of parity {parity}): {len(data.texts)} frames, real-outcome "
                  f"AUC of its verdicts {folds[-1]['episode_auc']:.3f}, {time.time() - t:.0f} s so far", flush=True)
    return {"scored": scored, "outcome": outcome, "folds": folds}


# How an imagined episode's done probabilities become a verdict (and the score its AUC reads):
# the in-model evaluation's own rule (done at the first frame over the threshold), and the
# episode's end (the task still done over its last three imagined frames).
RULES = {"first crossing": lambda p: float(p.max()), "end": lambda p: float(p[-3:].mean())}


def report(args, policies, scored, outcome, folds, out: Path) -> dict:
    from vidact.worldmodel.env import SUCCESS_THRESHOLD
    from vidact.worldmodel.judge import auc

    summary: dict = {"args": vars(args), "folds": folds, "judges": {}}
    lines, names = [], []
    for judge_name, curves in scored.items():
        for rule, score in RULES.items():
            name = f"{judge_name}, {rule}"
            names.append(name)
            verdict = {k: {s: score(p) for s, p in v.items()} for k, v in curves.items()}
            rows = []
            for label in policies:
                for task in args.tasks:
                    v, o = verdict[(label, task)], outcome[(label, task)]
                    starts = sorted(v)
                    ok = {s: v[s] > SUCCESS_THRESHOLD for s in starts}
                    rows.append({"policy": label, "task": task, "real": sum(o[s][0] for s in starts) / len(starts),
                                 "imagined": sum(ok.values()) / len(starts), "episodes": len(starts),
                                 "agree": sum(ok[s] == o[s][0] for s in starts)})
            xs, ys = [r["real"] for r in rows], [r["imagined"] for r in rows]
            # episode level: does the imagined episode's score tell its real twin's outcome?
            scores = torch.tensor([verdict[k][s] for k in verdict for s in sorted(verdict[k])])
            truth = torch.tensor([outcome[k][s][0] for k in verdict for s in sorted(verdict[k])])
            means = [(sum(r["real"] for r in rows if r["policy"] == p) / len(args.tasks),
                      sum(r["imagined"] for r in rows if r["policy"] == p) / len(args.tasks)) for p in policies]
            summary["judges"][name] = {
                "pearson": pearson(xs, ys), "spearman": spearman(xs, ys), "rows": rows,
                "episode_auc": auc(scores, truth), "episode_agreement": float(sum(r["agree"] for r in rows)) / len(truth),
                "per_task_spearman": {t: spearman([r["real"] for r in rows if r["task"] == t],
                                                  [r["imagined"] for r in rows if r["task"] == t]) for t in args.tasks},
                "policy_means": {"pearson": pearson(*zip(*means)), "spearman": spearman(*zip(*means))},
                "episodes": {f"{k[0]}/{k[1]}": {str(s): {"score": round(verdict[k][s], 4), "real": outcome[k][s][0]}
                                                for s in sorted(verdict[k])} for k in verdict}}
            r = summary["judges"][name]
            per_task = ", ".join(f"{t.split('-')[0]} {v:.2f}" for t, v in r["per_task_spearman"].items())
            lines += [f"{name}: Spearman {r['spearman']:.2f}, Pearson {r['pearson']:.2f} over {len(rows)} (policy, "
                      f"task) pairs; per task {per_task}; policy means Spearman {r['policy_means']['spearman']:.2f}; "
                      f"episodes: real-outcome AUC {r['episode_auc']:.3f}, agreement {r['episode_agreement']:.2f}"]
            tag = ("outcome" if judge_name == "outcome judge" else "base") + ("_end" if rule == "end" else "")
            scatter([(x["real"], x["imagined"], f"{x['policy']}/{x['task'].split('-')[0]}") for x in rows],
                    out / f"scatter_{tag}.png", f"{name}: Pearson {r['pearson']:.2f}, Spearman {r['spearman']:.2f}")
    table = ["| policy | task | MetaWorld | " + " | ".join(names) + " |", "|---|---|---:|" + "---:|" * len(names)]
    rows = {n: summary["judges"][n]["rows"] for n in names}
    for i, r in enumerate(rows[names[0]]):
        n_ep = r["episodes"]
        cells = " | ".join(f"{round(rows[n][i]['imagined'] * n_ep)}/{n_ep}" for n in names)
        table.append(f"| {r['policy']} | {r['task']} | {round(r['real'] * n_ep)}/{n_ep} | {cells} |")
    table += [""] + lines
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return summary


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policies", nargs="+", required=True, metavar="LABEL=BUNDLE")
    p.add_argument("--real", nargs="+", required=True, metavar="LABEL=DIR",
                   help="each policy's MetaWorld results on the same seeds (DIR/results.json, TASK replaced per task)")
    p.add_argument("--world-model", required=True, help="world-model bundle with its judge")
    p.add_argument("--dataset", required=True, help="first frames of the evaluation's scenes; TASK replaced per task")
    p.add_argument("--tasks", nargs="+", required=True)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--max-steps", type=int, default=200)
    p.add_argument("--imagine-steps", type=int, default=2)
    p.add_argument("--noise-scale", type=float, default=0.0, help="the policies' (vidact eval --noise-scale)")
    p.add_argument("--batch-size", type=int, default=10, help="episodes imagined together (vidact eval's default)")
    p.add_argument("--base-data", nargs="*", default=[], help="real episodes mixed into the fine-tuning (the "
                   "judge's own training data), so it keeps reading real frames")
    p.add_argument("--base-every", type=int, default=4, help="every n-th frame of --base-data")
    p.add_argument("--init-judge", default=None, help="judge folder to fine-tune (default: the world model's)")
    p.add_argument("--finetune-steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--part", default="0/1", help="i/n: imagine only every n-th (policy, task) job, then stop")
    p.add_argument("--action-guidance", type=float, default=None, help="the world model's guidance on the actions "
                   "when imagining (default: its recipe's)")
    p.add_argument("--chunk-tail", choices=["repeat", "policy"], default="repeat", help="the world model's actions "
                   "after the executed ones: the last repeated (vidact eval's) or the rest of the policy's chunk")
    p.add_argument("--episodes-dir", default=None, help="imagined episodes (default OUT/episodes)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    policies = dict(x.split("=", 1) for x in args.policies)
    real = dict(x.split("=", 1) for x in args.real)
    if set(policies) - set(real):
        raise SystemExit(f"--real missing for {sorted(set(policies) - set(real))}")
    imagine_stage(args, policies, out)
    if args.part != "0/1":
        return 0
    result = judge_stage(args, policies, real, out)
    report(args, policies, result["scored"], result["outcome"], result["folds"], out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

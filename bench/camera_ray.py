"""Where does a camera look toward a task's goal? (issue 15)

One camera fixes a point only up to where it lies along the ray through its pixel: the residual
error of a reader that sees a floating goal from one view should lie along that ray. This prints
the ray's direction (unit vector, x, y, z) from the camera to the task's mean goal over ``--seeds``
reset scenes, to set beside the readers' per-axis goal errors (BENCHMARKS.md, after "A larger
picture for the reader").

    MUJOCO_GL=egl .venv/bin/python bench/camera_ray.py --tasks reach-v3 pick-place-v3 --camera corner2
"""

from __future__ import annotations

import argparse

import mujoco
import numpy as np

from vidact.data.metaworld import ExpertRollout, metaworld_env_state


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["reach-v3", "pick-place-v3"])
    p.add_argument("--camera", default="corner2", help="a MetaWorld camera name, placed as vidact renders it")
    p.add_argument("--seeds", type=int, default=50, help="reset scenes averaged for the mean goal")
    p.add_argument("--seed", type=int, default=8_000_000, help="the first reset seed (the probes' held-out ones)")
    args = p.parse_args()
    for task in args.tasks:
        env = ExpertRollout(task, [args.camera], 96, 96, env_state=True)
        goals = np.stack([metaworld_env_state(env.reset(args.seed + i))[3:6] for i in range(args.seeds)]).astype(float)
        mujoco.mj_forward(env.env.model, env.env.data)
        camera = env.env.data.cam_xpos[env.camera_ids[0]].copy()
        goal = goals.mean(0)
        toward = goal - camera
        print(f"{task}: {args.camera} at {np.round(camera, 3).tolist()} m, mean goal {np.round(goal, 3).tolist()} m, "
              f"{np.linalg.norm(toward):.2f} m away; the ray's direction (x, y, z) "
              f"{np.round(toward / np.linalg.norm(toward), 2).tolist()}", flush=True)
        env.close()


if __name__ == "__main__":
    main()

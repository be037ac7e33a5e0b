"""``vidact serve BUNDLE --port P``: one policy behind a websocket, openpi's protocol (see
``client.py``). Requests are served one at a time (one model, one observation history); each new
connection starts a new episode.

Reply to an observation: ``{"actions": [K,A] float32 (or [B,K,A]), "future_frames": [Tf,V,C,H,W]
(policy mode only), "server_timing": {"infer_ms": ...}}``. Observation keys are LeRobot's
(``observation.image``, ``observation.state``, ``task``); openpi's ``prompt`` is accepted for
``task``.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback

import numpy as np

from vidact.deploy.client import packb, unpackb
from vidact.deploy.policy import Policy

log = logging.getLogger(__name__)


class PolicyServer:
    def __init__(self, policy: Policy, host: str = "0.0.0.0", port: int = 8000):
        self.policy, self.host, self.port = policy, host, port
        self._lock = threading.Lock()
        self._server = None

    @property
    def metadata(self) -> dict:
        p = self.policy
        return {"policy": "vidact", "mode": p.mode.value, "chunk_length": p.config.chunk_length,
                "n_action_steps": p.n_action_steps, "action_dim": p.config.action_dim,
                "state_dim": p.config.state_dim, "camera_keys": p.camera_keys,
                "image_size": [p.config.height, p.config.width], "history": p.config.history}

    def infer(self, observation: dict) -> dict:
        if observation.get("reset"):
            self.policy.reset()
            return {"reset": True}
        if "task" not in observation and "prompt" in observation:
            observation = {**observation, "task": observation["prompt"]}
        start = time.perf_counter()
        chunk = self.policy.predict_chunk(observation)
        out = {"actions": np.ascontiguousarray(chunk.actions, np.float32),
               "server_timing": {"infer_ms": 1000 * (time.perf_counter() - start)}}
        if chunk.future_frames is not None:
            out["future_frames"] = np.ascontiguousarray(chunk.future_frames, np.float32)
        return out

    def _handle(self, websocket) -> None:
        from websockets.exceptions import ConnectionClosed

        with self._lock:
            self.policy.reset()  # a new client is a new episode
        websocket.send(packb(self.metadata))
        while True:
            try:
                message = websocket.recv()
            except ConnectionClosed:
                return
            try:
                with self._lock:
                    reply = self.infer(unpackb(message))
                websocket.send(packb(reply))
            except ConnectionClosed:
                return
            except Exception:  # openpi's behaviour: the traceback as a text frame, then close
                websocket.send(traceback.format_exc())
                websocket.close(1011, "internal error")
                return

    def serve_forever(self) -> None:
        from websockets.sync.server import serve

        with serve(self._handle, self.host, self.port, compression=None, max_size=None) as server:
            self._server = server
            log.info("serving on ws://%s:%d", self.host, self.port)
            server.serve_forever()

    def start(self) -> "PolicyServer":
        """Serve in a background thread (tests, benchmarks); ``stop()`` ends it."""
        from websockets.sync.server import serve

        self._server = serve(self._handle, self.host, self.port, compression=None, max_size=None)
        self.port = self._server.socket.getsockname()[1]  # port 0 -> the one the OS picked
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def main(args) -> int:
    from vidact.deploy.sim import set_threads

    set_threads(args.threads)
    policy = Policy.from_pretrained(args.bundle, mode=args.mode, steps=args.steps, device=args.device)
    server = PolicyServer(policy, args.host, args.port)
    print(f"vidact serve: {args.bundle} ({policy.mode.value}) on ws://{args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0

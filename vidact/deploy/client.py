"""Client for ``vidact serve`` (and any openpi policy server): websocket + msgpack, openpi's wire
format, so ``openpi_client.WebsocketClientPolicy`` talks to ``vidact serve`` and this client talks
to openpi servers.

Protocol (openpi ``WebsocketPolicyServer``): on connect the server sends its metadata; then each
binary message is an observation dict and the reply is ``{"actions": [K,A], "server_timing":
{...}}``; a text reply is a server-side error (traceback). vidact adds one message,
``{"reset": True}``, to start a new episode (the server keeps the observation history).
Arrays travel as ``{"__ndarray__": True, "data", "dtype", "shape"}`` maps (openpi's
``msgpack_numpy``), never pickle.
"""

from __future__ import annotations

import functools
import time
from typing import Any, Callable

import numpy as np

from vidact.deploy.executors import Executor, OpenLoop


def pack_array(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in ("V", "O", "c"):
        raise ValueError(f"unsupported dtype {obj.dtype}")
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    return obj


def unpack_array(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        return np.ndarray(buffer=obj[b"data"], dtype=np.dtype(obj[b"dtype"]), shape=obj[b"shape"])
    if b"__npgeneric__" in obj:
        return np.dtype(obj[b"dtype"]).type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, default=pack_array)


def unpackb(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, object_hook=unpack_array)


class PolicyClient:
    """``infer(observation) -> {"actions": [K,A], ...}``; ``select_action`` runs a chunk executor
    on the client side (open loop over the server's ``n_action_steps`` by default)."""

    def __init__(self, host: str = "localhost", port: int = 8000, executor: Executor | None = None,
                 timeout_s: float = 30.0):
        from websockets.sync.client import connect

        uri = host if host.startswith("ws") else f"ws://{host}:{port}"
        deadline = time.monotonic() + timeout_s
        while True:  # the server may still be loading the model
            try:
                self._ws = connect(uri, compression=None, max_size=None, open_timeout=timeout_s)
                break
            except (ConnectionRefusedError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.metadata: dict = unpackb(self._ws.recv())
        K = int(self.metadata.get("chunk_length", 1))
        self.executor = executor or OpenLoop(K, int(self.metadata.get("n_action_steps", K)))

    def infer(self, observation: dict) -> dict:
        self._ws.send(packb(observation))
        reply = self._ws.recv()
        if isinstance(reply, str):
            raise RuntimeError(f"policy server error:\n{reply}")
        return unpackb(reply)

    def reset(self) -> None:
        self._ws.send(packb({"reset": True}))
        reply = self._ws.recv()
        if isinstance(reply, str):
            raise RuntimeError(f"policy server error:\n{reply}")
        self.executor.reset()

    def select_action(self, observation: dict) -> np.ndarray:
        infer: Callable[[], np.ndarray] = functools.partial(lambda o: self.infer(o)["actions"], observation)
        return self.executor.act(infer)

    def close(self) -> None:
        self._ws.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Client for ``vidact serve`` (and any openpi policy server): websocket + msgpack, openpi's wire
format, so ``openpi_client.WebsocketClientPolicy`` talks to ``vidact serve`` and this client talks
to openpi servers.

Protocol (openpi ``WebsocketPolicyServer``): on connect the server sends its metadata; then each
binary message is an observation dict and the reply is ``{"actions": [K,A], "server_timing":
{...}}``; a text reply is a server-side error (``vidact serve`` sends a one-line message, openpi a
traceback), which clients raise. vidact adds one message, ``{"reset": True}``, to start a new
episode (the server keeps the observation history, one per connection). A server started with a
token expects ``Authorization: Api-Key TOKEN`` on the websocket handshake (openpi-client's
``api_key``). Arrays travel as ``{"__ndarray__": True, "data", "dtype", "shape"}`` maps (openpi's
``msgpack_numpy``), never pickle.
"""

from __future__ import annotations

import functools
import math
import os
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


TOKEN_ENV = "VIDACT_SERVE_TOKEN"  # the shared secret of `vidact serve --token`, for server and client
NUMERIC_KINDS = "biuf"  # bool, int, uint, float: no objects, void or complex from the wire


def unpack_array(obj: dict) -> Any:
    """The inverse of ``pack_array``; a map that does not describe a numeric array raises ValueError."""
    if b"__ndarray__" in obj:
        try:
            dtype, shape, data = np.dtype(obj[b"dtype"]), tuple(obj[b"shape"]), obj[b"data"]
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed array: {e}") from None
        if dtype.kind not in NUMERIC_KINDS:
            raise ValueError(f"unsupported array dtype {dtype}")
        if not all(isinstance(n, int) and n >= 0 for n in shape) or not isinstance(data, bytes) \
                or len(data) != math.prod(shape) * dtype.itemsize:
            raise ValueError(f"malformed array: shape {list(shape)} of {dtype} in {len(data)} bytes")
        return np.ndarray(buffer=data, dtype=dtype, shape=shape)
    if b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind not in NUMERIC_KINDS:
            raise ValueError(f"unsupported scalar dtype {dtype}")
        return dtype.type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    import msgpack

    return msgpack.packb(obj, default=pack_array)


def unpackb(data: bytes) -> Any:
    import msgpack

    return msgpack.unpackb(data, object_hook=unpack_array)


class PolicyServerError(RuntimeError):
    """The server's one-line reply to a request it refused or failed."""


class PolicyClient:
    """``infer(observation) -> {"actions": [K,A], ...}``; ``select_action`` runs a chunk executor
    on the client side (open loop over the server's ``n_action_steps`` by default). ``token``
    (default: ``$VIDACT_SERVE_TOKEN``) is sent as ``Authorization: Api-Key TOKEN``."""

    def __init__(self, host: str = "localhost", port: int = 8000, executor: Executor | None = None,
                 timeout_s: float = 30.0, token: str | None = None):
        from websockets.sync.client import connect

        uri = host if host.startswith("ws") else f"ws://{host}:{port}"
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Api-Key {token}"} if token else None
        deadline = time.monotonic() + timeout_s
        while True:  # the server may still be loading the model
            try:
                self._ws = connect(uri, compression=None, max_size=None, open_timeout=timeout_s,
                                   additional_headers=headers)
                break
            except (ConnectionRefusedError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        self.metadata: dict = unpackb(self._ws.recv())
        K = int(self.metadata.get("chunk_length", 1))
        self.executor = executor or OpenLoop(K, int(self.metadata.get("n_action_steps", K)))

    def _request(self, message: dict) -> dict:
        self._ws.send(packb(message))
        reply = self._ws.recv()
        if isinstance(reply, str):
            raise PolicyServerError(f"policy server: {reply}")
        return unpackb(reply)

    def infer(self, observation: dict) -> dict:
        return self._request(observation)

    def reset(self, seed: int | None = None) -> None:
        """A new episode on the server; ``seed`` names its sampler noise (the same seed replays it)."""
        self._request({"reset": True} if seed is None else {"reset": True, "seed": int(seed)})
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

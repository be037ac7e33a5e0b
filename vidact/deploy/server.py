"""``vidact serve BUNDLE --port P``: one policy behind a websocket, openpi's protocol (see
``client.py``).

Reply to an observation: ``{"actions": [K,A] float32 (or [B,K,A]), "future_frames": [Tf,V,C,H,W]
(policy mode only), "server_timing": {"infer_ms": ...}}``. Observation keys are LeRobot's
(``observation.image``, ``observation.state``, ``task``); openpi's ``prompt`` is accepted for
``task``; ``capture_time`` (``time.time()`` at capture) is read when an age limit is set.

Safety (issue 16):
- binds 127.0.0.1 unless told otherwise; any other address prints a warning;
- each connection is its own episode: its own observation history, executor and seed counter
  (``Policy.session``), so concurrent clients never mix; inference itself runs one request at a
  time (one model);
- messages above ``max_message_bytes`` close the connection (websocket close 1009); the default
  is sized from the largest observation the bundle expects (``default_max_message_bytes``);
- a request that cannot be served gets a one-line text reply (openpi's convention for errors:
  its client raises ``RuntimeError`` with the text) and the connection stays open with its episode
  unchanged; the traceback of an unexpected error goes to the server's log only, and that
  connection is closed (1011) since its episode state is unknown;
- with a token, the websocket handshake must carry ``Authorization: Api-Key TOKEN`` (openpi-client's
  ``api_key``; ``Bearer TOKEN`` also works); anything else gets HTTP 401.
"""

from __future__ import annotations

import hmac
import logging
import sys
import threading
import time
from http import HTTPStatus

import numpy as np

from vidact.deploy.client import TOKEN_ENV, packb, unpackb
from vidact.deploy.planner import planner_kwargs
from vidact.deploy.policy import CAPTURE_TIME_KEY, ObservationError, Policy, UnsafeActionError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The observation as float32 [C,H,W] per camera (4x the uint8 size), batched up to 4, plus slack
# for msgpack framing and the instruction; never below 4 MiB, so one 480x640 RGB camera sent as
# LeRobot's float32 in [0,1] (3.7 MB; lerobot-eval's MetaWorld frames are 480x480) fits whatever
# size the bundle itself was trained at (the policy resizes).
MESSAGE_MARGIN = 4
MESSAGE_SLACK_BYTES = 64 * 1024
MIN_MESSAGE_BYTES = 4 << 20
MAX_ERROR_CHARS = 500


def default_max_message_bytes(policy: Policy) -> int:
    """Bytes of the largest observation the bundle expects, with a margin (``MESSAGE_MARGIN``)."""
    c = policy.config
    cams = policy.info.get("cameras", {})
    sizes = cams.get("recorded_size") or []
    largest = 0
    for i, _ in enumerate(policy.camera_keys):
        h, w = sizes[i] if i < len(sizes) and sizes[i] else (c.height, c.width)
        largest += 4 * c.channels * max(h, c.height) * max(w, c.width)  # float32 [C,H,W]
    largest += 8 * c.state_dim
    return max(MESSAGE_MARGIN * largest + MESSAGE_SLACK_BYTES, MIN_MESSAGE_BYTES)


class ServeError(RuntimeError):
    """A start-up problem, reported as one line."""


class BadRequest(ValueError):
    """A message that is not an observation (not msgpack, a text frame, not a map)."""


def one_line(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[:MAX_ERROR_CHARS - 3] + "..."


class PolicyServer:
    def __init__(self, policy: Policy, host: str = DEFAULT_HOST, port: int = 8000,
                 max_message_bytes: int | None = None, token: str | None = None):
        self.policy, self.host, self.port = policy, host, port
        self.max_message_bytes = max_message_bytes or default_max_message_bytes(policy)
        self.token = token or None
        self._lock = threading.Lock()  # one inference at a time: one model
        self._server = None

    @property
    def metadata(self) -> dict:
        p = self.policy
        return {"policy": "vidact", "mode": p.mode.value, "chunk_length": p.config.chunk_length,
                "n_action_steps": p.n_action_steps, "action_dim": p.config.action_dim,
                "state_dim": p.config.state_dim, "camera_keys": p.camera_keys,
                "image_size": [p.config.height, p.config.width], "history": p.config.history,
                "max_message_bytes": self.max_message_bytes,
                "max_state_deviation": p.checks.max_state_deviation, "max_observation_age_s": p.checks.max_age_s}

    # ------------------------------------------------------------------ requests

    def infer(self, session: Policy, observation: dict) -> dict:
        """One observation -> the reply map, in ``session``'s episode."""
        if observation.get("reset") is True:
            seed = observation.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
                raise BadRequest(f"reset: seed must be a non-negative integer, got {seed!r}")
            session.reset(seed=seed)
            return {"reset": True}
        if "task" not in observation and "prompt" in observation:
            observation = {**observation, "task": observation["prompt"]}
        start = time.perf_counter()
        with self._lock:
            chunk = session.predict_chunk(observation)
        out = {"actions": np.ascontiguousarray(chunk.actions, np.float32),
               "server_timing": {"infer_ms": 1000 * (time.perf_counter() - start)}}
        if chunk.future_frames is not None:
            out["future_frames"] = np.ascontiguousarray(chunk.future_frames, np.float32)
        return out

    def respond(self, session: Policy, message: bytes | str) -> tuple[bytes | str, bool]:
        """One websocket message -> (reply frame, keep the connection open). A text reply is an error."""
        try:
            return packb(self.infer(session, self._decode(message))), True
        except (BadRequest, ObservationError) as e:
            log.info("refused a request: %s", e)
            return one_line(f"{'bad request' if isinstance(e, BadRequest) else 'refused observation'}: {e}"), True
        except UnsafeActionError as e:
            log.error("%s", e)
            return one_line(f"refused actions: {e}"), True
        except Exception:  # the traceback (file paths, code) stays in the server's log
            log.exception("internal error while serving a request")
            return "internal error (details are in the server's log); the connection is closed", False

    @staticmethod
    def _decode(message: bytes | str) -> dict:
        if isinstance(message, str):
            raise BadRequest("expected a binary msgpack message, got a text frame")
        try:
            request = unpackb(message)
        except Exception as e:  # msgpack's own errors, malformed arrays
            detail = f"{type(e).__name__}: {one_line(e)[:120]}".rstrip(": ")
            raise BadRequest(f"not a msgpack observation ({detail})") from None
        if not isinstance(request, dict):
            raise BadRequest(f"expected a map of observation keys, got {type(request).__name__}")
        return request

    # ------------------------------------------------------------------ connections

    def _authorize(self, connection, request):
        """websockets' ``process_request``: None lets the handshake go on; a response refuses it."""
        if self.token is None:
            return None
        scheme, _, value = (request.headers.get("Authorization") or "").partition(" ")
        given = value.strip().encode()
        if scheme.lower() in ("api-key", "bearer") and hmac.compare_digest(given, self.token.encode()):
            return None
        log.warning("refused a connection from %s: missing or wrong token", connection.remote_address)
        return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong token: send 'Authorization: Api-Key "
                                                           "TOKEN' (openpi-client: api_key=TOKEN)\n")

    def _handle(self, websocket) -> None:
        from websockets.exceptions import ConnectionClosed

        session = self.policy.session()  # a new connection is a new episode of its own
        try:
            websocket.send(packb(self.metadata))
            for message in websocket:
                reply, keep_open = self.respond(session, message)
                websocket.send(reply)
                if not keep_open:
                    websocket.close(1011, "internal error")
                    return
        except ConnectionClosed as e:
            if e.sent is not None and e.sent.code == 1009:
                log.info("closed a connection from %s: message over %d bytes", websocket.remote_address,
                         self.max_message_bytes)

    def _serve(self):
        from websockets.sync.server import serve

        return serve(self._handle, self.host, self.port, compression=None, max_size=self.max_message_bytes,
                     process_request=self._authorize)

    def serve_forever(self) -> None:
        with self._serve() as server:
            self._server = server
            log.info("serving on ws://%s:%d", self.host, server.socket.getsockname()[1])
            server.serve_forever()

    def start(self) -> "PolicyServer":
        """Serve in a background thread (tests, benchmarks); ``stop()`` ends it."""
        self._server = self._serve()
        self.port = self._server.socket.getsockname()[1]  # port 0 -> the one the OS picked
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


def exposure_warning(host: str, token: str | None) -> str | None:
    """The warning printed when the server listens beyond this machine."""
    if host in LOOPBACK_HOSTS:
        return None
    where = "all interfaces" if host in ("0.0.0.0", "::", "") else host
    advice = "" if token else f"; set a shared secret with --token or ${TOKEN_ENV}"
    return (f"vidact serve: warning: listening on {where}: anyone who can reach this machine's port can send "
            f"observations and receive actions{advice}")


def main(args) -> int:
    import os

    from vidact.deploy.policy import ObservationChecks
    from vidact.deploy.sim import set_threads

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    if args.max_message_bytes is not None and args.max_message_bytes < 1:
        raise ServeError(f"--max-message-bytes must be >= 1, got {args.max_message_bytes}")
    set_threads(args.threads)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    checks = ObservationChecks.from_args(args)
    policy = Policy.from_pretrained(args.bundle, mode=args.mode, steps=args.steps, device=args.device, checks=checks,
                                    noise_scale=args.noise_scale, compiled=args.compile,
                                    **planner_kwargs(args))
    server = PolicyServer(policy, args.host, args.port, max_message_bytes=args.max_message_bytes, token=token)
    warning = exposure_warning(args.host, token)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    deviation = "off" if checks.max_state_deviation is None else f"{checks.max_state_deviation:g}"
    print(f"vidact serve: {args.bundle} ({policy.mode.value}) on ws://{args.host}:{args.port}; messages up to "
          f"{server.max_message_bytes} bytes, state deviation limit {deviation}"
          + (f", observation age limit {checks.max_age_s:g} s ('{CAPTURE_TIME_KEY}' key)" if checks.max_age_s else "")
          + (", token required" if token else ""), flush=True)
    try:
        server.serve_forever()
    except OSError as e:  # the port is taken, the address is not this machine's
        raise ServeError(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0


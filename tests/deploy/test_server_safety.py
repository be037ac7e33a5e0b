"""`vidact serve` under load and abuse (issue 16): concurrent clients each keep their own episode,
malformed requests get a one-line answer and leave the episode as it was, oversized messages and
missing tokens are refused, and the server keeps serving correct answers afterwards.

The policy is a tiny random model with two history frames one step apart, so a server that shared
the observation history or the seed counter between connections would give different actions."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from vidact.deploy import Policy
from vidact.deploy.client import PolicyClient, PolicyServerError, packb, unpackb
from vidact.deploy.server import MIN_MESSAGE_BYTES, PolicyServer, default_max_message_bytes, exposure_warning
from vidact.generative.sample import SamplerConfig

INFO = {"action": {"bounds": {"low": [-1.5, -1.5], "high": [1.5, 1.5]}}}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: two per op spin against other processes on a busy 2-core box (measured here
    under a concurrent test run: 2.6 s per 7 ms inference; BENCHMARKS.md, Latency)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model():
    """sliding-square shapes (16x16 grey camera, 2-d state and action, K=4), history 2 at stride 1;
    weights drawn at random (the heads are zero at init, which would make actions ignore the
    observation), state statistics mean 0 / std 1 so the deviation check is on."""
    from vidact.data.fake import sliding_square_config
    from vidact.models import VidAct

    torch.manual_seed(0)
    net = VidAct(sliding_square_config(history=2, future_frame_stride=1)).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.1)
    net.normalizer.set_stats({"state": {"mean": [0, 0], "std": [1, 1]}, "action": {"mean": [0, 0], "std": [1, 1]}})
    return net


def make_policy(model) -> Policy:
    return Policy(model, SamplerConfig(steps=2), INFO)


@pytest.fixture()
def server(model):
    server = PolicyServer(make_policy(model), port=0).start()
    yield server
    server.stop()


def observations(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"observation.image": rng.integers(0, 256, (16, 16, 1), dtype=np.uint8),
             "observation.state": rng.normal(size=2).astype(np.float32),
             "task": ["move left", "move right", "move up", "move down"][seed % 4]} for _ in range(n)]


def test_history_and_seed_matter_so_mixing_would_show(model):
    """The premise of the load test: the older history frame and the chunk counter change the actions."""
    policy = make_policy(model)
    a, b, c = observations(0, 3)
    policy.predict_chunk(a)
    after_a = policy.predict_chunk(c).actions
    policy.reset()
    policy.predict_chunk(b)
    assert not np.allclose(after_a, policy.predict_chunk(c).actions)


def test_eight_concurrent_clients_each_get_their_own_episode(server, model):
    n_clients, n_steps, reset_at = 8, 5, 3
    sequences = [observations(seed, n_steps) for seed in range(n_clients)]
    expected = []
    local = make_policy(model)  # in-process, one episode per client; even clients reset half way
    for i, seq in enumerate(sequences):
        local.reset(seed=100 + i)  # each episode's noise named by its seed, here as on the server
        chunks = []
        for step, obs in enumerate(seq):
            if i % 2 == 0 and step == reset_at:
                local.reset(seed=200 + i)
            chunks.append(local.predict_chunk(obs).actions)
        expected.append(chunks)

    got: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_clients, timeout=300)  # generous: a loaded CI box

    def client(i: int) -> None:
        try:
            with PolicyClient("127.0.0.1", server.port) as c:
                c.reset(seed=100 + i)
                for step, obs in enumerate(sequences[i]):
                    barrier.wait()  # every client's step-th request in flight together
                    if i % 2 == 0 and step == reset_at:
                        c.reset(seed=200 + i)
                    got[i].append(c.infer(obs)["actions"])
        except BaseException as e:  # reported below, with the client's number
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=500)
    assert not errors, errors
    for i in range(n_clients):
        assert len(got[i]) == n_steps
        for step in range(n_steps):
            assert np.array_equal(got[i][step], expected[i][step]), f"client {i} step {step}"


class Raw:
    """A websocket client that sends anything (text frames, arbitrary bytes)."""

    def __init__(self, port: int, **kwargs):
        from websockets.sync.client import connect

        self.ws = connect(f"ws://127.0.0.1:{port}", compression=None, max_size=None, **kwargs)
        self.metadata = unpackb(self.ws.recv())

    def ask(self, frame: bytes | str):
        self.ws.send(frame)
        reply = self.ws.recv(timeout=120)
        return reply if isinstance(reply, str) else unpackb(reply)

    def close(self):
        self.ws.close()


def good(seed: int) -> dict:
    return observations(100 + seed, 1)[0]


def array(data: bytes, dtype: str, shape: list) -> dict:
    return {b"__ndarray__": True, b"data": data, b"dtype": dtype, b"shape": shape}


def malformed() -> list[tuple[str, bytes | str, str]]:
    """(name, frame, a word the one-line reply must contain)."""
    obs = good(0)
    image, state = obs["observation.image"], obs["observation.state"]
    rng = np.random.default_rng(0)
    cases = [
        ("not msgpack", b"\xc1\xc1 definitely not msgpack", "bad request"),
        ("truncated msgpack", packb(obs)[:-7], "bad request"),
        ("text frame", "observation please", "text frame"),
        ("a list", packb([1, 2, 3]), "map"),
        ("a number", packb(12), "map"),
        ("nested too deep", b"\x91" * 100_000 + b"\x00", "bad request"),
        ("wrong keys", packb({"image": image, "state": state}), "missing"),
        ("reset not True", packb({"reset": "yes", "task": "x"}), "missing"),
        ("reset with a negative seed", packb({"reset": True, "seed": -3}), "seed"),
        ("reset with a seed that is not an integer", packb({"reset": True, "seed": "7"}), "seed"),
        ("image of the wrong rank", packb({**obs, "observation.image": image[0, :, 0]}), "shape"),
        ("image of the wrong channels", packb({**obs, "observation.image": np.repeat(image, 3, 2)}), "channel"),
        ("empty image", packb({**obs, "observation.image": image[:0]}), "shape"),
        ("int64 image", packb({**obs, "observation.image": image.astype(np.int64)}), "dtype"),
        ("NaN float image", packb({**obs, "observation.image": np.full((1, 16, 16), np.nan, np.float32)}), "NaN"),
        ("float image out of range", packb({**obs, "observation.image": np.full((1, 16, 16), 7.0, np.float32)}),
         "[0,1]"),
        ("state of the wrong size", packb({**obs, "observation.state": np.zeros(3, np.float32)}), "[2]"),
        ("NaN state", packb({**obs, "observation.state": np.array([np.nan, 0], np.float32)}), "NaN"),
        ("infinite state", packb({**obs, "observation.state": np.array([0, -np.inf], np.float32)}), "infinite"),
        ("state far outside the training statistics", packb({**obs, "observation.state": np.array([0, 1e4])}),
         "standard deviations"),
        ("state as text", packb({**obs, "observation.state": "0.5, 0.5"}), "observation.state"),
        ("ragged state", packb({**obs, "observation.state": [[1.0], [1.0, 2.0]]}), "observation.state"),
        ("task not text", packb({**obs, "task": 5}), "task"),
        ("batch sizes disagree", packb({**obs, "observation.image": np.stack([image] * 3)}), "batch"),
        ("array with a short buffer", packb({**obs, "observation.state": array(b"\0" * 3, "<f4", [2])}),
         "malformed array"),
        ("object array", packb({**obs, "observation.state": array(b"\0" * 16, "|O", [2])}), "dtype"),
        ("array with a negative shape", packb({**obs, "observation.state": array(b"", "<f4", [-2])}), "malformed"),
    ]
    cases += [(f"random bytes {i}", rng.bytes(int(rng.integers(1, 300))), "") for i in range(5)]
    return cases


def test_malformed_requests_get_one_line_and_leave_the_episode_unchanged(server, model):
    local = make_policy(model)
    raw = Raw(server.port)
    try:
        assert raw.ask(packb({"reset": True, "seed": 0})) == {"reset": True}
        local.reset(seed=0)
        for i, (name, frame, word) in enumerate(malformed()):
            reply = raw.ask(frame)
            assert isinstance(reply, str), f"{name}: answered {reply!r}"
            assert word in reply, f"{name}: {reply!r}"
            assert "\n" not in reply and "Traceback" not in reply and ".py" not in reply and len(reply) <= 500, reply
            # The same connection still answers, and exactly as a policy that never saw the bad request.
            obs = good(i)
            assert np.array_equal(raw.ask(packb(obs))["actions"], local.predict_chunk(obs).actions), name
    finally:
        raw.close()
    with PolicyClient("127.0.0.1", server.port) as client:  # a new connection: a new episode
        client.reset(seed=1)
        local.reset(seed=1)
        assert np.array_equal(client.infer(good(0))["actions"], local.predict_chunk(good(0)).actions)


def test_oversized_messages_close_the_connection_and_the_server_keeps_serving(model):
    server = PolicyServer(make_policy(model), port=0, max_message_bytes=20_000).start()
    local = make_policy(model)
    try:
        from websockets.exceptions import ConnectionClosedError

        raw = Raw(server.port)
        assert raw.metadata["max_message_bytes"] == 20_000
        big = {**good(0), "observation.image": np.zeros((200, 200, 1), np.uint8)}  # 40 kB
        with pytest.raises(ConnectionClosedError) as closed:
            raw.ask(packb(big))
        assert closed.value.rcvd.code == 1009  # "message too big"
        with PolicyClient("127.0.0.1", server.port) as client:
            client.reset(seed=0)
            local.reset(seed=0)
            assert np.array_equal(client.infer(good(0))["actions"], local.predict_chunk(good(0)).actions)
    finally:
        server.stop()


def test_default_message_cap_is_sized_from_the_bundle(model):
    policy = make_policy(model)
    assert default_max_message_bytes(policy) == MIN_MESSAGE_BYTES  # 16x16 grey: far below the floor
    assert MIN_MESSAGE_BYTES > len(packb({**good(0), "observation.image": np.zeros((3, 480, 640), np.float32)}))
    policy.info = {"cameras": {"keys": ["observation.image"], "recorded_size": [[720, 1280]]}}
    one_frame = 4 * 1 * 720 * 1280  # float32 [C,H,W] at the recorded size
    assert 4 * one_frame < default_max_message_bytes(policy) < 4 * one_frame + 100_000


def test_internal_errors_reply_briefly_and_log_the_traceback(server, caplog):
    def boom(*args, **kwargs):
        raise RuntimeError("secret detail in /home/someone/vidact/generative/sample.py")

    original = server.policy.sampler.sample
    server.policy.sampler.sample = boom  # sessions share the sampler
    try:
        raw = Raw(server.port)
        with caplog.at_level(logging.ERROR, logger="vidact.deploy.server"):
            reply = raw.ask(packb(good(0)))
        assert reply.startswith("internal error") and "secret" not in reply and "/home" not in reply
        assert "secret detail" in caplog.text and "Traceback" in caplog.text
    finally:
        server.policy.sampler.sample = original
    with PolicyClient("127.0.0.1", server.port) as client:
        assert client.infer(good(0))["actions"].shape == (4, 2)


def test_openpi_client_raises_the_one_line_error(server):
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    client = openpi.WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    with pytest.raises(RuntimeError, match="refused observation: observation 'observation.state': dims \\[0\\] are "
                                           "NaN or infinite") as err:
        client.infer({**good(0), "observation.state": np.array([np.nan, 0.0])})
    assert "Traceback" not in str(err.value)
    assert client.infer(good(1))["actions"].shape == (4, 2)  # the connection is still open


def test_token_is_required_when_set(model, monkeypatch):
    from websockets.exceptions import InvalidStatus

    server = PolicyServer(make_policy(model), port=0, token="s3cret").start()
    try:
        monkeypatch.delenv("VIDACT_SERVE_TOKEN", raising=False)
        for token in (None, "wrong"):
            with pytest.raises(InvalidStatus, match="401"):
                PolicyClient("127.0.0.1", server.port, token=token, timeout_s=5)
        with PolicyClient("127.0.0.1", server.port, token="s3cret") as client:
            assert client.infer(good(0))["actions"].shape == (4, 2)
        monkeypatch.setenv("VIDACT_SERVE_TOKEN", "s3cret")  # the client reads the same variable
        with PolicyClient("127.0.0.1", server.port) as client:
            assert client.metadata["policy"] == "vidact"
        openpi = pytest.importorskip("openpi_client.websocket_client_policy")
        assert openpi.WebsocketClientPolicy(host="127.0.0.1", port=server.port,
                                            api_key="s3cret").infer(good(0))["actions"].shape == (4, 2)
    finally:
        server.stop()


def test_binds_loopback_by_default_and_warns_otherwise(model):
    from vidact.cli import build_parser

    assert PolicyServer(make_policy(model)).host == "127.0.0.1"
    assert build_parser().parse_args(["serve", "b"]).host == "127.0.0.1"
    assert exposure_warning("127.0.0.1", None) is None
    warning = exposure_warning("0.0.0.0", None)
    assert "all interfaces" in warning and "--token" in warning
    assert "--token" not in exposure_warning("0.0.0.0", "t")


def test_error_replies_raise_in_the_vidact_client(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        with pytest.raises(PolicyServerError, match="standard deviations"):
            client.infer({**good(0), "observation.state": np.array([50.0, 0.0])})

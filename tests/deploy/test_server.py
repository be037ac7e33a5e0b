"""`vidact serve`: websocket + msgpack (openpi protocol) round trip, errors, reset; openpi's own
client when installed. Concurrency, malformed requests, tokens: test_server_safety.py."""

from __future__ import annotations

import numpy as np
import pytest

from vidact.deploy import Policy
from vidact.deploy.client import PolicyClient, packb, unpackb
from vidact.deploy.server import PolicyServer


def obs(value=100):
    return {"observation.image": np.full((16, 16, 1), value, np.uint8),
            "observation.state": np.array([0.5, -0.5], np.float32), "task": "slide the square"}


@pytest.fixture()
def server(bundle):
    server = PolicyServer(Policy.from_pretrained(bundle), host="127.0.0.1", port=0).start()
    yield server
    server.stop()


def test_msgpack_numpy_round_trip():
    data = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(3), "s": "text"}
    back = unpackb(packb(data))
    assert np.array_equal(back["a"], data["a"]) and back["a"].dtype == np.float32 and back["b"] == 3


def test_remote_actions_equal_local_ones(server, bundle):
    local = Policy.from_pretrained(bundle)
    with PolicyClient("127.0.0.1", server.port) as client:
        assert client.metadata["chunk_length"] == 4 and client.metadata["camera_keys"] == ["observation.image"]
        client.reset(seed=5)  # the episode's noise, named as the local policy's
        local.reset(seed=5)
        first = client.infer(obs())
        assert first["actions"].shape == (4, 2) and first["server_timing"]["infer_ms"] > 0
        assert np.allclose(first["actions"], local.predict_chunk(obs()).actions)
        second = client.infer(obs())
        assert not np.allclose(first["actions"], second["actions"])
        client.reset(seed=5)  # the same episode seed replays the episode
        assert np.allclose(client.infer(obs())["actions"], first["actions"])
        client.reset()  # a new episode of its own
        assert not np.allclose(client.infer(obs())["actions"], first["actions"])
        assert client.select_action(obs()).shape == (2,)


def test_bad_observation_returns_the_error_text(server):
    with PolicyClient("127.0.0.1", server.port) as client:
        with pytest.raises(RuntimeError, match="observation.state"):
            client.infer({"observation.image": obs()["observation.image"], "task": "x"})
        assert client.infer(obs())["actions"].shape == (4, 2)  # the connection stays open


def test_openpi_client_talks_to_vidact_serve(server):
    openpi = pytest.importorskip("openpi_client.websocket_client_policy")
    client = openpi.WebsocketClientPolicy(host="127.0.0.1", port=server.port)
    assert client.get_server_metadata()["policy"] == "vidact"
    out = client.infer({**obs(), "prompt": "slide the square"})
    assert out["actions"].shape == (4, 2)


def test_vidact_serve_command(bundle):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # The default host (127.0.0.1), a token from the environment, a message cap.
    env = {**os.environ, "VIDACT_SERVE_TOKEN": "s3cret"}
    proc = subprocess.Popen([sys.executable, "-m", "vidact.cli", "serve", str(bundle), "--port", str(port),
                             "--mode", "policy", "--threads", "1", "--max-message-bytes", "50000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        with PolicyClient("127.0.0.1", port, timeout_s=60, token="s3cret") as client:
            assert client.metadata["mode"] == "policy" and client.metadata["max_message_bytes"] == 50000
            out = client.infer(obs())
            assert out["actions"].shape == (4, 2) and out["future_frames"].shape == (1, 1, 1, 16, 16)
            with pytest.raises(RuntimeError, match="refused observation.*NaN"):
                client.infer({**obs(), "observation.state": np.array([np.nan, 0.0], np.float32)})
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert f"on ws://127.0.0.1:{port}" in output and "token required" in output, output
    assert "warning" not in output and "Traceback" not in output, output

import subprocess
import sys
import time

VIDACT = [sys.executable, "-m", "vidact.cli"]


def test_help_is_fast_and_lists_commands():
    t0 = time.perf_counter()
    out = subprocess.run([*VIDACT, "--help"], capture_output=True, text=True, check=True)
    assert "dry-run" in out.stdout and "data" in out.stdout
    assert time.perf_counter() - t0 < 10  # no torch import on --help (generous bound for a loaded CI box)
    code = "import sys, vidact.cli; vidact.cli.build_parser(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_dry_run_builds_and_samples_every_mode():
    out = subprocess.run([*VIDACT, "dry-run", "debug_sliding_square"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for mode in ("policy", "policy_fast", "forward_dynamics", "inverse_dynamics", "video"):
        assert f"sample {mode}" in out.stdout
    assert "dry-run OK" in out.stdout and "parameters:" in out.stdout


def test_dry_run_bad_key_exits_2_with_a_message():
    out = subprocess.run([*VIDACT, "dry-run", "debug_sliding_square", "model.flavr=S"], capture_output=True, text=True)
    assert out.returncode == 2
    assert "did you mean 'model.flavor'" in out.stderr and "Traceback" not in out.stderr

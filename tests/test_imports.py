import subprocess
import sys

import pytest

HEAVY = ("lightning", "pytorch_lightning", "deepspeed", "omegaconf")


@pytest.mark.parametrize("module", ["vidact.models", "vidact.generative", "vidact.tokenizers.video", "vidact.types"])
def test_model_side_imports_leave_training_stack_unloaded(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"

import subprocess
import sys

import pytest

HEAVY = ("lightning", "pytorch_lightning", "deepspeed", "omegaconf")


@pytest.mark.parametrize("module", ["vidact.models", "vidact.generative", "vidact.tokenizers.video", "vidact.types"])
def test_model_side_imports_leave_training_stack_unloaded(module):
    code = f"import sys, {module}; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing {module} loaded {out.stdout.strip()}"


def _loaded(module: str, prefixes: tuple[str, ...]) -> list[str]:
    code = f"import sys, {module}; print(','.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", ["vidact.deploy", "vidact.deploy.lerobot_plugin.modeling_vidact"])
def test_deploy_reads_bundles_without_importing_export(module):
    # issue 16 part 5: deploy -> export -> deploy was a circle; the bundle layout lives in vidact.bundle.
    assert _loaded(module, ("vidact.export",)) == []


def test_bundle_module_is_a_leaf():
    assert _loaded("vidact.bundle", ("vidact.", "torch")) == ["vidact.bundle"]

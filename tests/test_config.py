import subprocess
import sys

import pytest

from vidact.config import CONFIGS_DIR, RECIPES_DIR, ConfigError, from_yaml, load, to_yaml

ALL_YAML = sorted(CONFIGS_DIR.rglob("*.yaml")) + sorted(RECIPES_DIR.rglob("*.yaml"))


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_yaml_loads(path):
    cfg = load(path)
    assert cfg.model.size[0] > 0


def test_there_are_shipped_yaml_files():
    assert len(ALL_YAML) >= 5


def test_recipe_by_name_and_overrides():
    cfg = load("debug_sliding_square", ["model.flavor=S", "train.batch_size=4", "model.frame_tokenizer.patch_size=2"])
    assert cfg.model.flavor == "S" and cfg.model.size == (384, 12, 6)
    assert cfg.train.batch_size == 4 and cfg.model.frame_tokenizer.patch_size == 2
    assert cfg.model.height == 16  # from the included fragment


@pytest.mark.parametrize("override,message", [
    ("model.flavr=S", "unknown config key 'model.flavr' .* did you mean 'model.flavor'"),
    ("trian.steps=3", "unknown config key 'trian' .* did you mean 'train'"),
    ("model.frame_tokenizer.kindd=vae", "did you mean 'model.frame_tokenizer.kind'"),
    ("model.dim=abc", "bad value for config key 'model.dim'"),
    ("model.flavor=XL", "model.flavor='XL' is not one of"),
    ("train.steps=0", "train.steps must be >= 1"),
    ("generative.mode_weights.polcy=1", "generative.mode_weights.polcy: unknown mode"),
    ("nonsense", "must look like key=value"),
    ("generative.mode_weights={policy: abc}", "bad value for config key 'generative.mode_weights.policy'"),
    ("generative.mode_weights={polcy: 1}", "generative.mode_weights.polcy: unknown mode"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message):
        load("debug_sliding_square", [override])


def test_a_mapping_replaces_a_dict_and_a_dotted_key_changes_one_entry():
    default = load("debug_sliding_square").generative.mode_weights
    assert len(default) > 1
    assert load("debug_sliding_square", ["generative.mode_weights={policy_fast: 1.0}"]).generative.mode_weights == {
        "policy_fast": 1.0}
    one = load("debug_sliding_square", ["generative.mode_weights.policy_fast=0.7"]).generative.mode_weights
    assert one == {**default, "policy_fast": 0.7}
    # Mappings for dataclass sections still merge (the other fields keep their values).
    cfg = load("debug_sliding_square", ["model={flavor: S}"])
    assert cfg.model.flavor == "S" and cfg.model.height == 16


def test_bad_key_in_a_file_names_the_file(tmp_path):
    (tmp_path / "frag.yaml").write_text("model:\n  hieght: 3\n")
    (tmp_path / "r.yaml").write_text("include: [frag.yaml]\nname: x\n")
    with pytest.raises(ConfigError, match=r"'model.hieght' \(from .*frag.yaml\); did you mean 'model.height'"):
        load(tmp_path / "r.yaml")
    (tmp_path / "cyc.yaml").write_text("include: [cyc.yaml]\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load(tmp_path / "cyc.yaml")
    with pytest.raises(ConfigError, match="not found"):
        (tmp_path / "m.yaml").write_text("include: [nowhere.yaml]\n")
        load(tmp_path / "m.yaml")


def test_yaml_round_trip():
    cfg = load("debug_sliding_square")
    assert from_yaml(to_yaml(cfg)) == cfg


def test_model_config_stays_free_of_omegaconf():
    # The run config may use omegaconf; the model config must stay a plain dataclass.
    code = "import vidact.models.configuration, sys; print('omegaconf' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""Config: defaults, Sec. 4.2 presets, YAML + overrides, key and type errors, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ocnet_edu.config import PAPER_DEFAULTS, Config, load_config, paper_config, save_config


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.optim.momentum == 0.9 and cfg.optim.poly_power == 0.9
    assert cfg.loss.aux_weight == 0.4 and cfg.loss.ohem_thresh == 0.7
    assert cfg.data.scale_range == (0.5, 2.0)


@pytest.mark.parametrize(
    ("preset", "lr", "wd", "crop", "batch", "iters", "classes"),
    [
        ("cityscapes", 0.01, 5e-4, (512, 1024), 8, 60_000, 19),
        ("cityscapes_trainval", 0.01, 5e-4, (512, 1024), 8, 100_000, 19),
        ("ade20k", 0.02, 1e-4, (520, 520), 16, 150_000, 150),
        ("lip", 0.007, 5e-4, (473, 473), 32, 100_000, 20),
        ("pascal_context", 0.001, 1e-4, (520, 520), 16, 30_000, 60),
        ("coco_stuff", 0.001, 1e-4, (520, 520), 16, 60_000, 171),
        ("cocostuff10k", 0.001, 1e-4, (520, 520), 16, 60_000, 171),
    ],
)
def test_paper_defaults_match_sec_4_2(preset: str, lr: float, wd: float, crop: tuple[int, int], batch: int, iters: int, classes: int) -> None:
    cfg = paper_config(preset)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.data.crop_size) == (lr, wd, crop)
    assert (cfg.schedule.batch_size, cfg.schedule.max_iters, cfg.model.num_classes) == (batch, iters, classes)
    assert set(PAPER_DEFAULTS) >= {preset}


def test_yaml_preset_then_file_then_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, {"preset": "ade20k", "optim": {"lr": 0.05}, "runtime": {"amp": True}})
    weights = "[1, 2.5" + ", 1" * 148 + "]"  # one weight per ADE20K class
    cfg = load_config(path, ["optim.lr=0.03", "data.crop_size=[256, 256]", f"loss.class_weights={weights}", "model.pretrained=/w/r101.pth"])
    assert cfg.preset == "ade20k" and cfg.schedule.max_iters == 150_000  # from the preset
    assert cfg.runtime.amp is True  # from the file
    assert cfg.optim.lr == 0.03 and cfg.data.crop_size == (256, 256)  # overrides win
    assert cfg.loss.class_weights[:3] == [1.0, 2.5, 1.0] and isinstance(cfg.loss.class_weights[0], float)
    assert cfg.model.pretrained == "/w/r101.pth"


def test_override_yaml_typing() -> None:
    cfg = load_config(None, ["runtime.compile=true", "schedule.batch_size=4", "optim.weight_decay=1e-4", "data.base_size=null", "optim.lr=1"])
    assert cfg.runtime.compile is True and cfg.schedule.batch_size == 4
    assert cfg.optim.weight_decay == 1e-4  # YAML reads "1e-4" as a string; accepted for a float
    assert cfg.data.base_size is None
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("optim.lrr=0.1", r"'optim\.lrr'.*lr, momentum, weight_decay, poly_power.*did you mean 'lr'"),
        ("modle.num_classes=3", r"'modle'.*did you mean 'model'"),
        ("runtime.seed.x=1", r"'runtime\.seed'.*expected int"),
        ("loss.ohem.thresh=1", r"'loss\.ohem'.*expected bool"),
    ],
)
def test_unknown_keys(override: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_config(None, [override])


def test_unknown_key_in_yaml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"'schedule\.max_iter'.*did you mean 'max_iters'"):
        load_config(write(tmp_path, {"schedule": {"max_iter": 10}}), [])
    with pytest.raises(ValueError, match="unknown preset 'ade20'.*did you mean 'ade20k'"):
        load_config(write(tmp_path, {"preset": "ade20"}), [])


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("schedule.max_iters=abc", r"'schedule\.max_iters': expected int, got 'abc'"),
        ("schedule.max_iters=1.5", r"expected int, got 1\.5"),
        ("runtime.amp=3", r"'runtime\.amp': expected bool, got 3"),
        ("optim.lr=fast", r"'optim\.lr': expected float, got 'fast'"),
        ("optim.lr=true", r"'optim\.lr': expected float, got True"),
        ("data.crop_size=[1, 2, 3]", r"'data\.crop_size': expected tuple\[int, int\]"),
        ("data.root=7", r"'data\.root': expected str, got 7"),
        ("model=3", r"section 'model' must be a mapping"),
    ],
)
def test_type_mismatch(override: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_config(None, [override])


def test_free_form_context_options(tmp_path: Path) -> None:
    path = write(tmp_path, {"model": {"context_options": {"groups": [8, 8], "key_channels": 256}}})
    cfg = load_config(path, ["model.context_options.dilation=2"])
    assert cfg.model.context_options == {"groups": [8, 8], "key_channels": 256, "dilation": 2}
    with pytest.raises(ValueError, match=r"'model\.context_options': expected dict"):
        load_config(None, ["model.context_options=[1]"])


def test_malformed_override() -> None:
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(None, ["optim.lr"])


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(None, ["preset=lip", f"loss.class_weights={[0.5] + [1.0] * 19}", "data.base_size=520", "runtime.out_dir=runs/lip"])
    save_config(cfg, tmp_path / "sub" / "saved.yaml")
    again = load_config(tmp_path / "sub" / "saved.yaml", [])
    assert again == cfg
    assert yaml.safe_load((tmp_path / "sub" / "saved.yaml").read_text())["data"]["crop_size"] == [473, 473]


def test_override_of_a_mapping_replaces_it_and_a_dotted_key_changes_one_entry(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  context: base_oc_isa\n  context_options: {channels: 64, groups: [2, 2]}\n")
    replaced = load_config(path, ["model.context=none", "model.context_options={channels: 32}"])
    assert replaced.model.context_options == {"channels": 32}
    one_key = load_config(path, ["model.context_options.groups=[4,4]"])
    assert one_key.model.context_options == {"channels": 64, "groups": [4, 4]}
    assert load_config(path, ["optim.lr=0.5"]).model.context_options == {"channels": 64, "groups": [2, 2]}

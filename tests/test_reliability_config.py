"""Reliability of configs and the command line: a bad value fails at once, naming the key, the
file or the flag; nothing hangs on a bad batch size."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ocnet_edu.__main__ import main
from ocnet_edu.config import RULES, ConfigError, load_config, validate_config
from ocnet_edu.engine.train import epoch_batches

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT / "configs" / "synthetic.yaml"


@pytest.mark.parametrize(("override", "key"), [
    ("schedule.batch_size=-2", "schedule.batch_size"),
    ("schedule.batch_size=0", "schedule.batch_size"),
    ("schedule.checkpoint_every=0", "schedule.checkpoint_every"),
    ("schedule.checkpoint_every=-1", "schedule.checkpoint_every"),
    ("schedule.max_iters=0", "schedule.max_iters"),
    ("optim.poly_power=-1", "optim.poly_power"),
    ("optim.lr=0", "optim.lr"),
    ("optim.lr=.nan", "optim.lr"),
    ("optim.momentum=1.5", "optim.momentum"),
    ("data.crop_size=[0,64]", "data.crop_size"),
    ("data.synthetic_size=[64,-1]", "data.synthetic_size"),
    ("data.scale_range=[2.0,0.5]", "data.scale_range"),
    ("data.brightness=-.inf", "data.brightness"),
    ("loss.class_weights=[1,2]", "loss.class_weights"),
    ("loss.class_weights=[1,1,1,1,-1]", "loss.class_weights"),
    ("loss.ohem_thresh=0", "loss.ohem_thresh"),
    ("model.dropout=1.0", "model.dropout"),
    ("model.num_classes=1", "model.num_classes"),
    ("model.backbone=resnet102", "model.backbone"),
    ("model.context=base_oc_isb", "model.context"),
    ("model.context_options.dropout=.nan", "model.context_options.dropout"),
    ("runtime.workers=-1", "runtime.workers"),
    ("runtime.device=tpu", "runtime.device"),
    ("runtime.amp_dtype=float8", "runtime.amp_dtype"),
    ("runtime.dist_timeout=0", "runtime.dist_timeout"),
    ("data.split=bogus", "data.split"),
    ("data.val_split=test", "data.val_split"),
    ("data.dataset=cityscape", "data.dataset"),
])
def test_bad_values_fail_when_loaded_naming_the_key_and_file(override, key):
    with pytest.raises(ConfigError) as caught:
        load_config(SYNTHETIC, [override])
    assert repr(key) in str(caught.value) and "synthetic.yaml" in str(caught.value)


def test_every_rule_accepts_the_shipped_configs():
    assert len({key for key, _, _ in RULES}) == len(RULES)  # one rule per key in the table
    for path in [SYNTHETIC, ROOT / "configs" / "digits.yaml", *sorted((ROOT / "configs" / "paper").glob("*.yaml"))]:
        validate_config(load_config(path))


@pytest.mark.parametrize(("preset", "classes"), [("cityscapes", 5), ("ade20k", 19), ("lip", 19), ("pascal_context", 59)])
def test_dataset_class_count_must_match_num_classes(preset, classes):
    with pytest.raises(ConfigError, match=rf"'model\.num_classes' is {classes} but the \w+ dataset has \d+ classes"):
        load_config(None, [f"preset={preset}", f"model.num_classes={classes}"])
    with pytest.raises(ConfigError, match="'model.num_classes' is 5 but the digits dataset has 11"):
        load_config(ROOT / "configs" / "digits.yaml", ["model.num_classes=5"])


def test_yaml_syntax_error_names_the_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  backbone: small\n  context: [base_oc_isa\nschedule:\n  max_iters: 3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML.*line \d+") as caught:
        load_config(path)
    assert "<unicode string>" not in str(caught.value)


def test_config_path_that_is_a_folder_or_missing(tmp_path):
    with pytest.raises(ConfigError, match=rf"{tmp_path} is a folder"):
        load_config(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bytes.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="bytes.yaml is not UTF-8"):
        load_config(tmp_path / "bytes.yaml")


def test_duplicate_yaml_keys_are_refused(tmp_path):
    path = tmp_path / "twice.yaml"
    path.write_text("optim:\n  lr: 0.1\nschedule:\n  max_iters: 3\noptim:\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml.*duplicate key 'optim' \(lines 1 and 5\)"):
        load_config(path)
    nested = tmp_path / "nested.yaml"
    nested.write_text("optim:\n  lr: 0.1\n  lr: 0.2\n")
    with pytest.raises(ConfigError, match=r"nested\.yaml.*duplicate key 'lr'"):
        load_config(nested)
    with pytest.raises(ConfigError, match=r"override 'model.context_options=\{a: 1, a: 2\}'.*duplicate key 'a'"):
        load_config(None, ["model.context_options={a: 1, a: 2}"])


def test_dist_timeout_is_a_runtime_key_with_a_default():
    assert load_config(None).runtime.dist_timeout == 30.0
    assert load_config(SYNTHETIC, ["runtime.dist_timeout=0.5"]).runtime.dist_timeout == 0.5


def test_epoch_batches_never_returns_an_empty_list():
    for batch_size in (0, -2):
        with pytest.raises(ValueError, match="batch_size"):
            epoch_batches(16, batch_size, 1, 0, 0, 0)


@pytest.mark.slow
def test_negative_batch_size_fails_in_a_second_instead_of_hanging():
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ocnet_edu", "train", "--no-progress", "--config", str(SYNTHETIC),
                           "schedule.batch_size=-2", "runtime.out_dir=/nonexistent/never"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 2 and "'schedule.batch_size' must be at least 1, got -2" in done.stderr
    assert time.perf_counter() - start < 60


@pytest.mark.parametrize("scale", ["0", "-1", "-0.5", "nan", "inf", "abc"])
@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_cli_scales_must_be_finite_and_positive(scale, command, capsys):
    argv = [command, "--config", str(SYNTHETIC), "--checkpoint", "x.pt", "--scales", "1", scale]
    if command == "predict":
        argv += ["--out", "preds"]
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    assert f"argument --scales: '{scale}'" in capsys.readouterr().err


def test_library_rejects_bad_scales_and_windows():
    import torch
    from torch import nn

    from ocnet_edu.engine.evaluate import multi_scale_logits, sliding_window_logits

    model, image = nn.Conv2d(3, 2, 1), torch.zeros(1, 3, 8, 8)
    for scales in ([0.0], [-1.0], [float("nan")], [float("inf")], []):
        with pytest.raises(ValueError, match="test scales must be finite numbers > 0"):
            multi_scale_logits(model, image, 2, scales)
    for crop, stride in (((0, 8), 2 / 3), ((8, 8), 0.0), ((8, 8), 1.5)):
        with pytest.raises(ValueError, match="positive crop size and a stride rate"):
            sliding_window_logits(model, image, 2, crop, stride)

"""Issue 13: ONNX export with dynamic height and width (``ocnet_edu.engine.export``, ``export`` command).

Every OCNet head is exported once from a config (small backbone, 16 channels) and run in ONNX
Runtime on two sizes: one whose 1/8 feature map (8 × 8) is divisible by ISA's groups (2, 2) and by
the pyramid level 2, and one (9 × 11) that is divisible by neither, so that the ISA padding and
Pyramid-OC's uneven regions must be computed from the size inside the graph. Exporting is slow
on a CPU (tens of seconds per model under ``torch.export``), so each head is exported once.
"""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

from ocnet_edu.__main__ import main  # noqa: E402
from ocnet_edu.config import load_config  # noqa: E402
from ocnet_edu.engine.builders import build_model  # noqa: E402
from ocnet_edu.engine.export import export_onnx, onnxruntime_logits  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")

#: image sizes: feature maps 8 × 8 (divisible by the groups) and 9 × 11 (not), and the example traced
SIZES = [(64, 64), (72, 88)]
EXAMPLE = (80, 96)

HEAD_OPTIONS = {
    "base_oc_isa": "{channels: 16, groups: [2, 2]}",
    "base_oc_sa": "{channels: 16}",
    "pyramid_oc_isa": "{channels: 16, groups: [2, 2], pyramid: [1, 2]}",
    "pyramid_oc_sa": "{channels: 16, pyramid: [1, 2]}",
    "asp_oc_isa": "{channels: 16, groups: [2, 2], dilations: [1, 2]}",
    "asp_oc_sa": "{channels: 16, dilations: [1, 2]}",
}


def small_config(context: str):
    """A config of a tiny OCNet (small backbone of width 4, 3 classes) with ``context``."""
    return load_config(None, ["model.backbone=small", "model.backbone_options={width: 4}",
                              f"model.context={context}", f"model.context_options={HEAD_OPTIONS[context]}",
                              "model.num_classes=3", "data.dataset=synthetic", "data.crop_size=[64, 64]"])


def trained_like(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with non-trivial BN statistics (so that BN is not the identity)."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    return model.eval()


# Every head is exported in CI; in mutation runs none (marker exporter: test_export_units.py checks
# export.py piece by piece there, without the exporter's 15 s a model). Before that rule only the first
# head was exported in mutation runs, for the reason that still holds for the others (mirror): they
# compare a head's ONNX graph with the same head in PyTorch, so a mutant of the head's arithmetic
# changes both sides alike, and they take ~110 s of a survivor's run. Where the two sides take
# different code (Pyramid-OC's regions one by one under export) test_heads.py checks both paths.
@pytest.mark.exporter
@pytest.mark.parametrize("context", [context if i == 0 else pytest.param(context, marks=pytest.mark.mirror)
                                     for i, context in enumerate(HEAD_OPTIONS)])
def test_head_exports_with_dynamic_size(context, tmp_path, one_thread):
    torch.manual_seed(0)
    model = trained_like(build_model(small_config(context)))
    path = tmp_path / f"{context}.onnx"
    metadata = export_onnx(model, path, example_size=EXAMPLE)
    low, high = metadata["dynamic_ranges"]["height"]
    assert low <= min(h for h, _ in SIZES) and high is None  # symbolic, not fixed to the example
    for batch, size in zip((1, 3), SIZES):
        images = torch.randn(batch, 3, *size)
        with torch.no_grad():
            expected = model(images)
        got = onnxruntime_logits(path, images)
        assert got.shape == (batch, 3, *size)
        assert (got - expected).abs().max().item() <= 1e-4, (context, size)


def write_run(tmp_path, context="base_oc_isa"):
    """A config file and a checkpoint (a bare state dict) of a tiny model; the model."""
    torch.manual_seed(0)
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text("model:\n  backbone: small\n  backbone_options: {width: 4}\n"
                        f"  context: {context}\n  context_options: {HEAD_OPTIONS[context]}\n  num_classes: 3\n"
                        "data:\n  dataset: synthetic\n  crop_size: [64, 64]\n")
    model = trained_like(build_model(load_config(cfg_path)))
    torch.save(model.state_dict(), tmp_path / "final.pt")
    return cfg_path, tmp_path / "final.pt", model


@pytest.mark.exporter
def test_cli_config_and_checkpoint_to_onnxruntime(tmp_path, capsys, one_thread):
    """``export --config --checkpoint --onnx`` writes a file that ONNX Runtime runs like the model."""
    cfg_path, checkpoint, model = write_run(tmp_path)
    out = tmp_path / "model.onnx"
    assert main(["export", "--config", str(cfg_path), "--checkpoint", str(checkpoint), "--onnx", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    import onnx

    stored = json.loads({p.key: p.value for p in onnx.load(out).metadata_props}["ocnet_edu"])
    assert stored["num_classes"] == 3 and stored["preprocessing"]["channels"] == "RGB"
    images = torch.randn(2, 3, 72, 88)
    with torch.no_grad():
        expected = model(images)
    assert (onnxruntime_logits(out, images) - expected).abs().max().item() <= 1e-4


def run_cli(args, capsys):
    """Exit status and stderr of ``python -m ocnet_edu export ARGS``."""
    code = main(["export", *args])
    return code, capsys.readouterr().err


def test_missing_checkpoint_is_named(tmp_path, capsys):
    cfg_path, _, _ = write_run(tmp_path)
    missing = tmp_path / "absent.pt"
    code, err = run_cli(["--config", str(cfg_path), "--checkpoint", str(missing), "--onnx", str(tmp_path / "m.onnx")],
                        capsys)
    assert code == 1 and str(missing) in err


def test_missing_output_directory_is_named(tmp_path, capsys):
    cfg_path, checkpoint, _ = write_run(tmp_path)
    folder = tmp_path / "no" / "such"
    code, err = run_cli(["--config", str(cfg_path), "--checkpoint", str(checkpoint), "--onnx", str(folder / "m.onnx")],
                        capsys)
    assert code == 1 and str(folder) in err and "does not exist" in err
    assert not folder.exists()


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_missing_exporter_package_names_the_extra(package, tmp_path, capsys, monkeypatch):
    cfg_path, checkpoint, _ = write_run(tmp_path)
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    code, err = run_cli(["--config", str(cfg_path), "--checkpoint", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")],
                        capsys)
    assert code == 1 and package in err and "ocnet_edu[export]" in err
    assert not (tmp_path / "m.onnx").exists()


def test_missing_onnxruntime_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ImportError, match=r"onnxruntime.*ocnet_edu\[export\]"):
        onnxruntime_logits(tmp_path / "m.onnx", torch.zeros(1, 3, 8, 8))


def test_config_and_published_together_is_a_usage_error(tmp_path, capsys):
    cfg_path, checkpoint, _ = write_run(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--config", str(cfg_path), "--checkpoint", str(checkpoint),
              "--published", "openseg:isanet", str(checkpoint), "--onnx", str(tmp_path / "m.onnx")])
    assert exit_info.value.code == 2 and "not both" in capsys.readouterr().err

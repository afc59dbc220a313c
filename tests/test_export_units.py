"""``ocnet_edu.engine.export``'s pieces one by one, without running the ONNX exporter (seconds, not the
tens of seconds of an export): output paths, the sizes a traced program holds for, the normalisation
written into the file, the check on a second size, and what :func:`export_onnx` hands the exporter."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from ocnet_edu.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ocnet_edu.engine import export
from ocnet_edu.engine.export import (ExportError, _check_other_size, check_output_path, dynamic_ranges, export_onnx,
                                     preprocessing_metadata, require_exporter)
from ocnet_edu.zoo.published import Preprocess


def test_output_path_is_returned_as_a_path_and_a_missing_folder_or_a_folder_is_refused(tmp_path):
    assert check_output_path(str(tmp_path / "m.onnx")) == tmp_path / "m.onnx"
    (tmp_path / "m.onnx").write_text("old")  # an existing file is replaced later, not refused
    assert check_output_path(tmp_path / "m.onnx") == tmp_path / "m.onnx"
    missing = tmp_path / "no" / "m.onnx"
    with pytest.raises(FileNotFoundError) as error:
        check_output_path(missing)
    assert str(error.value) == f"the output directory {missing.parent} of {missing} does not exist; create it first"
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError) as error:
        check_output_path(tmp_path / "folder")
    assert str(error.value) == (f"the ONNX output {tmp_path / 'folder'} is a directory; give a file name such as "
                                f"{tmp_path / 'folder' / 'model.onnx'}")


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_a_missing_exporter_package_is_named_with_the_extra_that_installs_it(package, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    require_exporter()  # both installed: nothing raised
    monkeypatch.setitem(sys.modules, package, None)  # `import package` now raises ImportError
    with pytest.raises(ImportError) as error:
        require_exporter()
    assert str(error.value) == (f"exporting to ONNX needs the package '{package}', which is not installed; install "
                                "the 'export' extra: pip install 'ocnet_edu[export]'")
    assert isinstance(error.value.__cause__, ImportError)


class Scale(nn.Module):
    """``[B, 3, H, W] → [B, 3, H, W]``: a per-channel scale (a parameter: the exported program then has
    a placeholder besides the input)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.arange(1.0, 4.0).view(1, 3, 1, 1))

    def forward(self, x):
        return x * self.scale


def test_dynamic_ranges_read_symbolic_sizes_as_unbounded_and_fixed_ones_as_themselves():
    example = (torch.randn(2, 3, 5, 7),)
    dynamic = torch.export.Dim.DYNAMIC
    program = torch.export.export(Scale(), example, dynamic_shapes=({0: dynamic, 2: dynamic, 3: dynamic},))
    # (the tracer takes every dynamic size to be at least 2: see docs/EXPORT.md)
    assert dynamic_ranges(program) == {"batch": (2, None), "height": (2, None), "width": (2, None)}
    assert len([n for n in program.graph.nodes if n.op == "placeholder"]) == 2  # the parameter and the input
    fixed = torch.export.export(Scale(), example)  # every size fixed to the example's
    assert dynamic_ranges(fixed) == {"batch": (2, 2), "height": (5, 5), "width": (7, 7)}
    height = torch.export.Dim("height", min=4, max=64)  # a bounded symbol keeps both bounds
    bounded = torch.export.export(Scale(), example, dynamic_shapes=({2: height},))
    assert dynamic_ranges(bounded) == {"batch": (2, 2), "height": (4, 64), "width": (7, 7)}


def test_preprocessing_is_the_imagenet_normalisation_for_our_models_and_the_sources_for_a_published_one():
    ours = preprocessing_metadata(nn.Identity())
    assert ours == {"channels": "RGB", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    assert json.loads(json.dumps(ours)) == ours  # written into the file as JSON
    published = nn.Identity()
    published.preprocess = Preprocess(bgr=True, mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0), align_corners=False)
    assert preprocessing_metadata(published) == {"channels": "BGR", "mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}
    published.preprocess = Preprocess(bgr=False, mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0), align_corners=True)
    assert preprocessing_metadata(published)["channels"] == "RGB"


def program_running(fn):
    """A stand-in for an exported program whose module is ``fn``, recording the inputs it sees."""
    seen = []

    def module():
        return lambda x: seen.append(tuple(x.shape)) or fn(x)

    return SimpleNamespace(module=module), seen


def test_the_second_size_is_the_example_grown_by_9_rows_and_17_columns_and_a_match_passes():
    model = Scale()
    program, seen = program_running(model)
    example = torch.randn(2, 3, 10, 12)
    assert _check_other_size(program, model, example) is None
    assert seen == [(2, 3, 19, 29)]


@pytest.mark.parametrize("offset, fails", [(5e-5, False), (2e-4, True), (float("nan"), True)])
def test_a_program_that_differs_from_the_model_beyond_1e_4_is_refused(offset, fails):
    model = Scale()
    program, _ = program_running(lambda x: model(x) + offset)
    example = torch.randn(2, 3, 10, 12)
    if not fails:
        _check_other_size(program, model, example)
        return
    with pytest.raises(ExportError) as error:
        _check_other_size(program, model, example)
    difference = f"{abs(offset):.3g}" if offset == offset else "nan"
    assert str(error.value) == (f"the traced graph differs from the model on (19, 29) by {difference}: the example "
                                "size is too small for this model (some size inside the network is 1 there); export "
                                "with a larger example (--size H W)")


def test_a_difference_of_exactly_1e_4_is_accepted():
    class Zeros(nn.Module):
        def forward(self, x):
            return torch.zeros(x.shape, dtype=torch.float64)

    program, _ = program_running(lambda x: torch.full(x.shape, 1e-4, dtype=torch.float64))
    _check_other_size(program, Zeros(), torch.randn(2, 3, 10, 12))  # the bound is inclusive


@pytest.mark.parametrize("failure", [AssertionError, RuntimeError])
def test_a_program_that_rejects_the_second_size_is_refused_with_the_first_line_of_its_reason(failure):
    def guard(x):
        raise failure("Guard failed: x.size()[2] == 10\nmore detail")

    program, _ = program_running(guard)
    with pytest.raises(ExportError) as error:
        _check_other_size(program, Scale(), torch.randn(2, 3, 10, 12))
    assert str(error.value) == ("the traced graph only holds for sizes like the example (10, 12): the example size is "
                                "too small for this model (some size inside the network is 1 there); export with a "
                                "larger example (--size H W) (Guard failed: x.size()[2] == 10)")
    assert isinstance(error.value.__cause__, failure) and isinstance(error.value, ValueError)


class Model(nn.Module):
    """A float64 model in train mode with the attributes export reads (5 input channels, 4 classes,
    a BGR preprocessing as a published model has)."""

    in_channels, num_classes = 5, 4

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(5, 4, 1).double()
        self.preprocess = Preprocess(bgr=True, mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0), align_corners=False)

    def forward(self, x):
        return self.conv(x)


def test_export_onnx_hands_the_exporter_an_eval_float32_model_a_dynamic_example_and_stores_the_metadata(
        tmp_path, monkeypatch):
    """The exporter itself is replaced by a recorder: what it is asked for, and what is done with its result."""
    calls, saved = {}, {}

    class Program:
        exported_program = "the exported program"
        model = SimpleNamespace(metadata_props={})

        def save(self, path):
            saved["path"] = path

    def fake_export(model, args, **options):
        calls.update(model=model, args=args, options=options, training=model.training,
                     dtype=next(model.parameters()).dtype)
        return Program()

    monkeypatch.setattr(export, "require_exporter", lambda: calls.setdefault("required", True))
    monkeypatch.setattr(torch.onnx, "export", fake_export)
    monkeypatch.setattr(export, "_check_other_size", lambda program, model, example: calls.update(
        checked=(program, model, tuple(example.shape))))
    ranges = {"batch": (0, None), "height": (0, None), "width": (0, None)}
    monkeypatch.setattr(export, "dynamic_ranges", lambda program: calls.setdefault("ranges_of", program) and ranges)
    model = Model().train()
    metadata = export_onnx(model, str(tmp_path / "m.onnx"), example_size=(40, 56), opset=18)
    assert calls["required"] and calls["training"] is False and calls["dtype"] == torch.float32
    (example,) = calls["args"]
    assert example.shape == (2, 5, 40, 56) and example.dtype == torch.float32
    dynamic = torch.export.Dim.DYNAMIC
    assert calls["options"] == {"dynamo": True, "dynamic_shapes": ({0: dynamic, 2: dynamic, 3: dynamic},),
                                "input_names": ["image"], "output_names": ["logits"], "opset_version": 18,
                                "verbose": False}
    assert calls["checked"] == ("the exported program", calls["model"], (2, 5, 40, 56))
    assert calls["ranges_of"] == "the exported program" and saved["path"] == tmp_path / "m.onnx"
    assert metadata == {"input": "image [B, 3, H, W] float32, normalised", "output": "logits [B, K, H, W]",
                        "num_classes": 4, "preprocessing": {"channels": "BGR", "mean": [1.0, 2.0, 3.0],
                                                            "std": [1.0, 1.0, 1.0]}, "dynamic_ranges": ranges}
    assert json.loads(Program.model.metadata_props["ocnet_edu"]) == json.loads(json.dumps(metadata))
    export_onnx(nn.Sequential(nn.Conv2d(3, 2, 1)), tmp_path / "m.onnx")  # defaults: 512 × 512, 3 channels, opset
    assert calls["args"][0].shape == (2, 3, 512, 512) and calls["options"]["opset_version"] is None
    assert json.loads(Program.model.metadata_props["ocnet_edu"])["num_classes"] is None  # no such attribute
    with pytest.raises(FileNotFoundError, match="does not exist"):  # the folder is checked before exporting
        calls.clear()
        export_onnx(model, tmp_path / "absent" / "m.onnx")
    assert "args" not in calls


def test_onnxruntime_logits_feeds_a_float32_cpu_array_and_returns_the_logits(tmp_path, monkeypatch):
    fed = {}

    class Session:
        def __init__(self, path, providers):
            fed.update(path=path, providers=providers)

        def run(self, outputs, inputs):
            fed.update(outputs=outputs, inputs=inputs)
            return [inputs["image"][:, :2] * 2]

    monkeypatch.setitem(sys.modules, "onnxruntime", SimpleNamespace(InferenceSession=Session))
    images = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    logits = export.onnxruntime_logits(tmp_path / "m.onnx", images)
    assert fed["path"] == str(tmp_path / "m.onnx") and fed["providers"] == ["CPUExecutionProvider"]
    assert fed["outputs"] == ["logits"] and set(fed["inputs"]) == {"image"}
    assert fed["inputs"]["image"].dtype.name == "float32"
    assert isinstance(logits, torch.Tensor) and torch.equal(logits, images.detach().float()[:, :2] * 2)

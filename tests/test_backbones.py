"""Tests of ocnet_edu.backbones: key layouts, parameter counts, strides, dilation, weight loading.

Full-size networks are built on the ``meta`` device (no memory, no arithmetic) for key, parameter
and shape checks; real forward passes use small inputs and, where possible, reduced widths.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from ocnet_edu.backbones import (
    BACKBONES,
    BackboneFeatures,
    Bottleneck,
    DilatedResNet,
    HRNet,
    build_backbone,
    load_pretrained,
)
from ocnet_edu.backbones.imagenet import HRNET_IGNORED_PREFIXES

DATA = Path(__file__).parent / "data"
META = torch.device("meta")


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


def expected_keys(name: str) -> list[str]:
    lines = (DATA / f"torchvision_{name}_keys.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_resnet(**kwargs) -> DilatedResNet:
    return DilatedResNet(depth=50, base_width=4, **kwargs)


def tiny_hrnet(**kwargs) -> HRNet:
    return HRNet(widths=(4, 8, 12, 16), num_modules=(1, 1, 1), num_blocks=1, stem_channels=8,
                 stage1_width=4, stage1_blocks=1, **kwargs)


def randomize_bn_statistics(module: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=generator)))


@pytest.fixture(scope="module")
def hrnet48_meta() -> HRNet:
    """HRNetV2-W48 on the meta device, built once for the layout, count and shape tests."""
    with META:
        return build_backbone("hrnetv2_w48")


# --------------------------------------------------------------------------- ResNet: layout

@pytest.mark.parametrize("depth", [50, 101])
def test_resnet_keys_identical_to_torchvision(depth: int) -> None:
    with META:
        model = DilatedResNet(depth=depth, with_fc=True)
    assert list(model.state_dict()) == expected_keys(f"resnet{depth}")


def test_resnet_key_file_has_torchvision_count() -> None:
    assert len(expected_keys("resnet50")) == 320
    assert len(expected_keys("resnet101")) == 626


def test_resnet_without_fc_drops_only_fc() -> None:
    with META:
        model = DilatedResNet(depth=50)
    assert list(model.state_dict()) == [k for k in expected_keys("resnet50") if not k.startswith("fc.")]


@pytest.mark.parametrize("depth, count", [(50, 25_557_032), (101, 44_549_160)])
def test_resnet_parameter_count_matches_torchvision(depth: int, count: int) -> None:
    with META:
        model = DilatedResNet(depth=depth, with_fc=True)
    assert n_params(model) == count
    assert n_params(model) - n_params(model.fc) == count - (2048 * 1000 + 1000)


def test_deep_stem_keys_and_shapes() -> None:
    with META:
        model = DilatedResNet(depth=101, deep_stem=True)
    state = model.state_dict()
    bn = ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    stem = [k for i in (1, 2, 3) for k in [f"conv{i}.weight"] + [f"bn{i}.{s}" for s in bn]]
    torchvision_body = [k for k in expected_keys("resnet101") if k.startswith("layer")]
    assert list(state) == stem + torchvision_body
    assert state["conv1.weight"].shape == (64, 3, 3, 3)
    assert state["conv3.weight"].shape == (128, 64, 3, 3)
    assert state["layer1.0.conv1.weight"].shape == (64, 128, 1, 1)
    assert state["layer1.0.downsample.0.weight"].shape == (256, 128, 1, 1)


def test_resnet_channel_attributes() -> None:
    with META:
        model = DilatedResNet(depth=101)
    assert (model.out_channels, model.aux_channels, model.output_stride) == (2048, 1024, 8)
    assert model.stage_channels == (256, 512, 1024, 2048)


# --------------------------------------------------------------------------- ResNet: dilation

def dilations(model: DilatedResNet, layer: str) -> list[int]:
    return [block.conv2.dilation[0] for block in getattr(model, layer)]


def test_first_block_dilation_previous_and_full() -> None:
    with META:
        previous = DilatedResNet(depth=101)
        full = DilatedResNet(depth=101, first_block_dilation="full")
    assert dilations(previous, "layer3") == [1] + [2] * 22
    assert dilations(previous, "layer4") == [2, 4, 4]
    assert dilations(full, "layer3") == [2] * 23
    assert dilations(full, "layer4") == [4, 4, 4]
    for model in (previous, full):
        for layer in ("layer3", "layer4"):
            first = getattr(model, layer)[0]
            assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)
            assert all(block.conv2.padding == block.conv2.dilation for block in getattr(model, layer))
        assert model.layer2[0].conv2.stride == (2, 2)
        assert dilations(model, "layer2") == [1] * 4


def test_previous_dilation_is_exactly_the_strided_network_subsampled() -> None:
    """With the "previous" rule, dilating is the à-trous identity: OS-8 features sampled every 4
    pixels equal the OS-32 (plain classification) features, which the "full" rule breaks."""
    torch.manual_seed(0)
    plain = tiny_resnet(output_stride=32)
    randomize_bn_statistics(plain, seed=1)
    dilated = tiny_resnet(output_stride=8)
    full = tiny_resnet(output_stride=8, first_block_dilation="full")
    dilated.load_state_dict(plain.state_dict())
    full.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = plain.eval()(x).out
        sampled = dilated.eval()(x).out[..., ::4, ::4]
        sampled_full = full.eval()(x).out[..., ::4, ::4]
    assert reference.shape == sampled.shape == (2, 128, 2, 2)
    torch.testing.assert_close(sampled, reference, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(sampled_full, reference, rtol=1e-2, atol=1e-3)


# --------------------------------------------------------------------------- ResNet: forward

@pytest.mark.parametrize("output_stride", [8, 16, 32])
def test_resnet_stage_shapes_and_stride(output_stride: int) -> None:
    model = tiny_resnet(output_stride=output_stride).eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 64, 96))
    assert isinstance(features, BackboneFeatures)
    s3 = min(output_stride, 16)  # layer3 is strided only when output_stride is 32
    expected = [(2, 16, 16, 24), (2, 32, 8, 12), (2, 64, 64 // s3, 96 // s3),
                (2, 128, 64 // output_stride, 96 // output_stride)]
    assert [tuple(t.shape) for t in features.stages] == expected
    assert features.out is features.stages[3] and features.aux is features.stages[2]


def test_full_width_resnet50_forward_output_stride_8() -> None:
    torch.manual_seed(0)
    model = DilatedResNet(depth=50).eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 64, 64))
    assert features.out.shape == (1, 2048, 8, 8)
    assert features.aux.shape == (1, 1024, 8, 8)
    assert torch.isfinite(features.out).all()


@pytest.mark.parametrize("name, size, out", [
    ("resnet101", (512, 1024), (1, 2048, 64, 128)),
    ("resnet101_deep", (769, 769), (1, 2048, 97, 97)),
    ("hrnetv2_w48", (512, 1024), (1, 720, 128, 256)),
])
def test_full_size_shapes_on_meta(name: str, size: tuple[int, int], out: tuple[int, ...], hrnet48_meta) -> None:
    with META:
        model = hrnet48_meta if name == "hrnetv2_w48" else build_backbone(name)
        features = model(torch.empty(1, 3, *size))
    assert tuple(features.out.shape) == out
    assert features.out.shape[1] == model.out_channels and features.aux.shape[1] == model.aux_channels


def test_resnet_rejects_bad_arguments_and_inputs() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        DilatedResNet(depth=34)
    with pytest.raises(ValueError, match="output_stride"):
        DilatedResNet(depth=50, output_stride=4)
    with pytest.raises(ValueError, match="first_block_dilation"):
        DilatedResNet(depth=50, first_block_dilation="half")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs projection=True"):
        Bottleneck(64, 64)
    model = tiny_resnet()
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="4-D tensor"):
        model(torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet152")


# --------------------------------------------------------------------------- pretrained loading

@pytest.fixture()
def saved_resnet(tmp_path: Path) -> tuple[DilatedResNet, Path]:
    torch.manual_seed(0)
    source = tiny_resnet(with_fc=True)
    randomize_bn_statistics(source, seed=2)
    path = tmp_path / "resnet.pth"
    torch.save(source.state_dict(), path)
    return source, path


def assert_same_weights(a: nn.Module, b: nn.Module, skip: tuple[str, ...] = ()) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if not k.startswith(skip)]
    assert keys == [k for k in sb if not k.startswith(skip)]
    for k in keys:
        assert torch.equal(sa[k], sb[k]), k


def test_pretrained_round_trip_is_exact(saved_resnet) -> None:
    source, path = saved_resnet
    torch.manual_seed(1)
    fresh = tiny_resnet()
    assert not torch.equal(fresh.conv1.weight, source.conv1.weight)
    torch.manual_seed(1)
    loaded = tiny_resnet(pretrained=str(path))
    assert_same_weights(source, loaded, skip=("fc.",))


@pytest.mark.parametrize("wrap", ["state_dict", "model", "module_prefix"])
def test_pretrained_accepts_wrapped_checkpoints(saved_resnet, tmp_path: Path, wrap: str) -> None:
    source, _ = saved_resnet
    state = source.state_dict()
    if wrap == "module_prefix":
        checkpoint = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    else:
        checkpoint = {wrap: state, "optimizer": {"lr": torch.tensor(0.1)}}
    path = tmp_path / f"{wrap}.pth"
    torch.save(checkpoint, path)
    target = tiny_resnet()
    report = load_pretrained(target, path)
    assert report.ignored == ("fc.bias", "fc.weight")
    assert report.loaded == len(state) - 2
    assert_same_weights(source, target, skip=("fc.",))


def test_pretrained_tolerates_missing_num_batches_tracked(saved_resnet, tmp_path: Path) -> None:
    source, _ = saved_resnet
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(state, path)
    target = tiny_resnet()
    report = load_pretrained(target, path)
    assert len(report.kept_default) == sum(isinstance(m, nn.BatchNorm2d) for m in target.modules())
    torch.testing.assert_close(target.layer2[0].bn1.running_var, source.layer2[0].bn1.running_var, rtol=0, atol=0)


def test_pretrained_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_weights.pth"
    with pytest.raises(FileNotFoundError, match="no_such_weights.pth"):
        tiny_resnet(pretrained=str(missing))


def test_pretrained_corrupted_file(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pth"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="could not read .*corrupt.pth"):
        load_pretrained(tiny_resnet(), path)
    not_a_state_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_state_dict)
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_pretrained(tiny_resnet(), not_a_state_dict)


def test_pretrained_mismatch_lists_missing_unexpected_and_shapes(saved_resnet, tmp_path: Path) -> None:
    source, _ = saved_resnet
    state = dict(source.state_dict())
    del state["layer1.0.conv1.weight"]
    state["layer9.0.conv1.weight"] = torch.zeros(1)
    state["conv1.weight"] = torch.zeros(4, 3, 3, 3)
    path = tmp_path / "mismatch.pth"
    torch.save(state, path)
    target = tiny_resnet()
    before = target.conv1.weight.clone()
    with pytest.raises(ValueError) as info:
        load_pretrained(target, path)
    message = str(info.value)
    assert "1 missing keys: layer1.0.conv1.weight" in message
    assert "1 unexpected keys: layer9.0.conv1.weight" in message
    assert "1 shape mismatches: conv1.weight (file (4, 3, 3, 3) vs model (4, 3, 7, 7))" in message
    assert torch.equal(target.conv1.weight, before)  # nothing was loaded


def test_pretrained_long_key_lists_are_truncated(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({f"head.{i}.weight": torch.zeros(1) for i in range(15)}, path)
    with META:
        target = DilatedResNet(depth=50)
    with pytest.raises(ValueError) as info:
        load_pretrained(target, path)
    message = str(info.value)
    assert "265 missing keys" in message  # 320 torchvision keys − 2 fc − 53 num_batches_tracked
    assert "15 unexpected keys" in message and "(5 more)" in message and "(255 more)" in message


def test_deep_stem_checkpoint_does_not_load_into_standard_stem(tmp_path: Path) -> None:
    path = tmp_path / "deep.pth"
    torch.save(tiny_resnet(deep_stem=True).state_dict(), path)
    with pytest.raises(ValueError, match="unexpected keys: conv2.weight"):
        load_pretrained(tiny_resnet(), path)


# --------------------------------------------------------------------------- HRNet

def test_hrnet_tiny_shapes_and_output_stride_4() -> None:
    model = tiny_hrnet().eval()
    with torch.no_grad():
        features = model(torch.randn(2, 3, 64, 96))
    assert [tuple(t.shape) for t in features.stages] == [(2, 4, 16, 24), (2, 8, 8, 12), (2, 12, 4, 6), (2, 16, 2, 3)]
    assert features.out.shape == (2, 40, 16, 24) and features.aux is features.out
    assert (model.out_channels, model.aux_channels, model.output_stride) == (40, 40, 4)
    # the concatenation keeps the highest-resolution branch unchanged in its first channels
    assert torch.equal(features.out[:, :4], features.stages[0])


def test_hrnet_non_divisible_input_rounds_up() -> None:
    model = tiny_hrnet().eval()
    with torch.no_grad():
        features = model(torch.randn(1, 3, 70, 45))
    assert features.out.shape == (1, 40, 18, 12)


def test_hrnet_w48_official_layout(hrnet48_meta) -> None:
    model = hrnet48_meta
    state = model.state_dict()
    shapes = {
        "conv1.weight": (64, 3, 3, 3),
        "conv2.weight": (64, 64, 3, 3),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer1.3.conv3.weight": (256, 64, 1, 1),
        "transition1.0.0.weight": (48, 256, 3, 3),
        "transition1.1.0.0.weight": (96, 256, 3, 3),
        "stage2.0.branches.0.0.conv1.weight": (48, 48, 3, 3),
        "stage2.0.branches.1.3.conv2.weight": (96, 96, 3, 3),
        "stage2.0.fuse_layers.0.1.0.weight": (48, 96, 1, 1),
        "stage2.0.fuse_layers.1.0.0.0.weight": (96, 48, 3, 3),
        "transition2.2.0.0.weight": (192, 96, 3, 3),
        "stage3.3.fuse_layers.2.0.1.0.weight": (192, 48, 3, 3),
        "transition3.3.0.0.weight": (384, 192, 3, 3),
        "stage4.2.fuse_layers.0.3.0.weight": (48, 384, 1, 1),
        "stage4.2.fuse_layers.3.0.2.0.weight": (384, 48, 3, 3),
        "stage4.2.fuse_layers.3.0.1.1.running_var": (48,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    for stage, modules in (("stage2", 1), ("stage3", 4), ("stage4", 3)):
        assert len(getattr(model, stage)) == modules
    unchanged_branches = ("transition1.0.0.0", "transition2.0", "transition2.1", "transition3.2")
    assert not any(k.startswith(unchanged_branches) for k in state)
    assert not any(".fuse_layers.1.1." in k or ".fuse_layers.0.0." in k for k in state)
    roots = {k.split(".")[0] for k in state}
    assert roots == {"conv1", "bn1", "conv2", "bn2", "layer1", "transition1", "stage2", "transition2", "stage3",
                     "transition3", "stage4"}


def test_hrnet_w48_parameter_count(hrnet48_meta) -> None:
    """65,325,120 backbone parameters. Adding HRNetV2's segmentation head (1×1 conv 720→720 with
    bias, BN, 1×1 conv 720→19 with bias) gives 65.86M, the "65.9M" of HRNetV2-W48; adding the
    ImageNet head instead gives 77.47M, the "77.5M" of HRNet-W48-C."""
    model = hrnet48_meta
    with META:
        seg_head = nn.Sequential(nn.Conv2d(720, 720, 1), nn.BatchNorm2d(720), nn.Conv2d(720, 19, 1))
        incre = [Bottleneck(c, h, projection=True) for c, h in zip((48, 96, 192, 384), (32, 64, 128, 256))]
        down = [nn.Sequential(nn.Conv2d(a, 2 * a, 3), nn.BatchNorm2d(2 * a)) for a in (128, 256, 512)]
        final = [nn.Conv2d(1024, 2048, 1), nn.BatchNorm2d(2048), nn.Linear(2048, 1000)]
    backbone = n_params(model)
    assert backbone == 65_325_120
    assert round((backbone + n_params(seg_head)) / 1e6, 1) == 65.9
    classification = backbone + sum(n_params(m) for m in incre + down + final)
    assert round(classification / 1e6, 1) == 77.5


def test_hrnet_loads_official_style_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = tiny_hrnet()
    randomize_bn_statistics(source, seed=3)
    checkpoint = {f"module.{k}": v for k, v in source.state_dict().items()}
    checkpoint["incre_modules.0.0.conv1.weight"] = torch.zeros(2, 4, 1, 1)
    checkpoint["downsamp_modules.0.0.weight"] = torch.zeros(1)
    checkpoint["final_layer.0.weight"] = torch.zeros(1)
    checkpoint["classifier.weight"] = torch.zeros(1000, 2048)
    path = tmp_path / "hrnet.pth"
    torch.save(checkpoint, path)
    torch.manual_seed(1)
    loaded = tiny_hrnet(pretrained=str(path))
    assert_same_weights(source, loaded)
    report = load_pretrained(tiny_hrnet(), path, ignore_prefixes=HRNET_IGNORED_PREFIXES)
    assert len(report.ignored) == 4


def test_hrnet_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="4 widths"):
        HRNet(widths=(8, 16, 32))
    with pytest.raises(ValueError, match="positive"):
        HRNet(widths=(8, 16, 32, 0))
    with pytest.raises(ValueError, match="3 input channels, got 4"):
        tiny_hrnet()(torch.randn(1, 4, 32, 32))


# W48: tests above; the small CPU backbone: tests/test_small_backbone.py
@pytest.mark.parametrize("name", [n for n in BACKBONES if n not in ("hrnetv2_w48", "small")])
def test_every_named_backbone_builds(name: str) -> None:
    with META:
        model = build_backbone(name)
    assert model.out_channels == (2048 if name.startswith("resnet") else int(name[-2:]) * 15)

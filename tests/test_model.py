"""Tests of ocnet_edu.model.OCNet: output convention, shapes, loss, channels_last, autocast, compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ocnet_edu.backbones import DilatedResNet, HRNet
from ocnet_edu.model import OCNet, OCNetOutput

META = torch.device("meta")


pytestmark = pytest.mark.usefixtures("one_thread")  # see tests/conftest.py


class TinyContext(nn.Module):
    """Stand-in context module: 3×3 conv → BN → ReLU, with the ``out_channels`` contract."""

    def __init__(self, in_channels: int, out_channels: int = 16) -> None:
        super().__init__()
        self.out_channels = out_channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def tiny_resnet() -> DilatedResNet:
    return DilatedResNet(depth=50, base_width=4)


def tiny_hrnet() -> HRNet:
    return HRNet(widths=(4, 8, 12, 16), num_modules=(1, 1, 1), num_blocks=1, stem_channels=8,
                 stage1_width=4, stage1_blocks=1)


def tiny_ocnet(backbone: str = "resnet", **kwargs) -> OCNet:
    torch.manual_seed(0)
    net = tiny_resnet() if backbone == "resnet" else tiny_hrnet()
    kwargs.setdefault("aux_hidden_channels", 8)
    return OCNet(backbone=net, context=TinyContext(net.out_channels), num_classes=5, **kwargs)


@pytest.mark.parametrize("backbone", ["resnet", "hrnet"])
def test_eval_returns_logits_at_input_size(backbone: str) -> None:
    model = tiny_ocnet(backbone).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 64, 48))
    assert isinstance(logits, torch.Tensor) and logits.shape == (2, 5, 64, 48)


@pytest.mark.parametrize("backbone", ["resnet", "hrnet"])
def test_train_returns_logits_and_aux_logits(backbone: str) -> None:
    model = tiny_ocnet(backbone).train()
    output = model(torch.randn(2, 3, 64, 48))
    assert isinstance(output, OCNetOutput)
    logits, aux_logits = output  # unpacks like a plain tuple
    assert logits.shape == aux_logits.shape == (2, 5, 64, 48)


def test_aux_head_placement() -> None:
    resnet_model = tiny_ocnet("resnet")
    assert resnet_model.aux_head[0].in_channels == resnet_model.backbone.aux_channels == 64  # layer3
    hrnet_model = tiny_ocnet("hrnet")
    assert hrnet_model.aux_head[0].in_channels == hrnet_model.backbone.out_channels == 40  # final representation
    with META:
        full = OCNet(backbone="resnet101", context=TinyContext(2048))
    assert [type(m) for m in full.aux_head] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.Dropout2d, nn.Conv2d]
    assert full.aux_head[0].in_channels == 1024 and full.aux_head[0].out_channels == 512
    assert full.aux_head[0].kernel_size == (3, 3) and full.aux_head[-1].out_channels == 19
    assert full.classifier.kernel_size == (1, 1) and full.classifier.in_channels == 16


def test_no_aux_head_when_weight_is_zero() -> None:
    model = tiny_ocnet(aux_weight=0.0).train()
    assert model.aux_head is None
    output = model(torch.randn(1, 3, 32, 32))
    assert output.aux_logits is None
    loss = model.loss(output, torch.zeros(1, 32, 32, dtype=torch.long))
    torch.testing.assert_close(loss, F.cross_entropy(output.logits, torch.zeros(1, 32, 32, dtype=torch.long)))


def test_loss_is_main_plus_weighted_aux_and_backpropagates() -> None:
    model = tiny_ocnet(aux_weight=0.4).train()
    target = torch.randint(0, 5, (2, 32, 32))
    target[:, :4] = 255
    output = model(torch.randn(2, 3, 32, 32))
    loss = model.loss(output, target)
    expected = F.cross_entropy(output.logits, target, ignore_index=255) + 0.4 * F.cross_entropy(
        output.aux_logits, target, ignore_index=255)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert model.backbone.conv1.weight.grad is not None and model.aux_head[0].weight.grad is not None
    with pytest.raises(TypeError, match="training-mode"):
        model.loss(output.logits, target)  # type: ignore[arg-type]


def test_loss_passes_the_training_options_to_segmentation_loss() -> None:
    """Training calls ``model.loss`` with the config's OHEM and class weights: the same number as
    :func:`segmentation_loss` with the model's aux weight."""
    from ocnet_edu.losses import segmentation_loss

    model = tiny_ocnet(aux_weight=0.4).train()
    target = torch.randint(0, 5, (2, 32, 32))
    output = model(torch.randn(2, 3, 32, 32))
    options = {"ohem": True, "ohem_thresh": 0.7, "ohem_min_kept": 50, "class_weights": torch.tensor([1.0, 2, 2, 2, 2])}
    expected = segmentation_loss(output.logits, target, output.aux_logits, aux_weight=0.4, **options)
    torch.testing.assert_close(model.loss(output, target, **options), expected)
    assert not torch.allclose(expected, model.loss(output, target))  # the options change the loss


def test_full_size_resnet101_and_hrnet_shapes_on_meta() -> None:
    with META:
        resnet_model = OCNet(backbone="resnet101", context=TinyContext(2048)).train()
        out = resnet_model(torch.empty(2, 3, 769, 769))
        hrnet_model = OCNet(backbone="hrnetv2_w48", context=TinyContext(720), num_classes=150).eval()
        logits = hrnet_model(torch.empty(1, 3, 520, 520))
    assert out.logits.shape == out.aux_logits.shape == (2, 19, 769, 769)
    assert logits.shape == (1, 150, 520, 520)


def test_channels_last_matches_contiguous() -> None:
    model = tiny_ocnet().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        result = model(x.to(memory_format=torch.channels_last))
    assert result.shape == reference.shape
    torch.testing.assert_close(result, reference, rtol=1e-4, atol=1e-4)


def test_autocast_bfloat16_on_cpu() -> None:
    model = tiny_ocnet().train()
    x = torch.randn(2, 3, 32, 32)
    target = torch.randint(0, 5, (2, 32, 32))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = model(x)
        loss = model.loss(output, target)
    assert output.logits.shape == (2, 5, 32, 32)
    assert output.logits.dtype == torch.bfloat16
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(model.classifier.weight.grad).all()
    model.eval()
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x)
    assert torch.isfinite(low).all()
    assert F.cosine_similarity(low.float().flatten(), reference.flatten(), dim=0) > 0.99


@pytest.mark.compile
def test_compiles_as_one_graph() -> None:
    """No data-dependent Python control flow: dynamo captures the training-mode forward (the
    superset of the eval path) without a graph break. Only dynamo runs (``backend="eager"``), to
    keep the test cheap; the eval path differs by one early ``return`` on ``self.training``."""
    torch._dynamo.reset()
    model = tiny_ocnet(dropout=0.0).train()
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        output = compiled(x)
        reference = model(x)
    assert isinstance(output, OCNetOutput)
    torch.testing.assert_close(output.logits, reference.logits)
    torch.testing.assert_close(output.aux_logits, reference.aux_logits)
    torch._dynamo.reset()


def test_rejects_bad_arguments() -> None:
    net = tiny_resnet()
    with pytest.raises(ValueError, match="3 input channels, got 1"):
        tiny_ocnet()(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="out_channels"):
        OCNet(backbone=net, context=nn.Identity())
    with pytest.raises(ValueError, match="aux_channels"):
        OCNet(backbone=nn.Conv2d(3, 8, 1), context=TinyContext(8))
    with pytest.raises(ValueError, match="unknown backbone"):
        OCNet(backbone="vgg16", context=TinyContext(8))
    with pytest.raises(ValueError, match="pretrained= only applies"):
        OCNet(backbone=net, context=TinyContext(128), pretrained="weights.pth")
    with pytest.raises(ValueError, match="num_classes"):
        OCNet(backbone=net, context=TinyContext(128), num_classes=0)
    with pytest.raises(TypeError, match="context must be"):
        OCNet(backbone=net, context=3)  # type: ignore[arg-type]


def test_pretrained_path_reaches_the_backbone(tmp_path) -> None:
    with META, pytest.raises(FileNotFoundError, match="missing_resnet101.pth"):
        OCNet(backbone="resnet101", context=TinyContext(2048), pretrained=str(tmp_path / "missing_resnet101.pth"))


# --------------------------------------------------------------------------- named context modules

def _build_context_module():
    heads = pytest.importorskip("ocnet_edu.heads", reason="ocnet_edu.heads is not importable yet")
    if not hasattr(heads, "build_context_module"):
        pytest.skip("ocnet_edu.heads.build_context_module does not exist yet")
    return heads.build_context_module


def test_named_context_module_small_forward() -> None:
    _build_context_module()
    torch.manual_seed(0)
    model = OCNet(backbone=tiny_resnet(), context="base_oc_isa", num_classes=3).eval()
    assert model.classifier.in_channels == model.context.out_channels
    with torch.no_grad():
        logits = model(torch.randn(1, 3, 64, 64))
    assert logits.shape == (1, 3, 64, 64) and torch.isfinite(logits).all()


def test_paper_configuration_on_meta() -> None:
    """ResNet-101 + Base-OC (ISA) at Cityscapes crop size, shapes only (HRNet: see above)."""
    _build_context_module()
    with META:
        model = OCNet(backbone="resnet101", context="base_oc_isa", num_classes=19).train()
        output = model(torch.empty(1, 3, 512, 1024))
    assert output.logits.shape == output.aux_logits.shape == (1, 19, 512, 1024)

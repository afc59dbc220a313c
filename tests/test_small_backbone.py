"""The small CPU backbone: shapes, stride, and a receptive field that matches its gradient."""

import pytest
import torch

from ocnet_edu.backbones import SmallBackbone, build_backbone


@pytest.mark.parametrize("blocks, head_kernel", [((1, 1, 1), 3), ((2, 1, 2), 3), ((1, 1, 1), 1)])
def test_receptive_field_matches_gradient_support(blocks, head_kernel):
    torch.manual_seed(0)
    net = SmallBackbone(width=4, blocks=blocks, head_kernel=head_kernel).eval()
    for m in net.modules():  # make every ReLU pass gradient: positive BN shift
        if isinstance(m, torch.nn.BatchNorm2d):
            m.bias.data.fill_(10.0)
    size = 160
    x = torch.randn(1, 3, size, size, requires_grad=True)
    out = net(x).out
    centre = out.shape[-1] // 2
    out[0, :, centre, centre].sum().backward()
    rows = torch.nonzero(x.grad[0].abs().sum(0).sum(1)).flatten()
    support = int(rows.max() - rows.min() + 1)
    # padding and stride alignment can only shrink what the recursion promises, by < one stride
    assert net.receptive_field() - 8 < support <= net.receptive_field()


def test_shapes_and_channels():
    net = build_backbone("small")
    features = net(torch.randn(2, 3, 60, 44))
    assert features.out.shape == (2, net.out_channels, 8, 6)
    assert features.aux.shape == (2, net.aux_channels, 8, 6)
    assert net.output_stride == 8
    with pytest.raises(ValueError, match="pretrained"):
        build_backbone("small", pretrained="x.pth")
    with pytest.raises(ValueError, match="three stages"):
        SmallBackbone(blocks=(1, 1))
    with pytest.raises(ValueError, match="head_kernel"):
        SmallBackbone(head_kernel=5)
    assert SmallBackbone(head_kernel=1).receptive_field() == SmallBackbone().receptive_field() - 32


def test_receptive_field_of_a_head_continues_the_backbone():
    from ocnet_edu.backbones.small import receptive_field

    net = SmallBackbone()
    field, jump = receptive_field(net.modules())
    assert (field, jump) == (net.receptive_field(), net.output_stride)
    head = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 1), torch.nn.Conv2d(4, 4, 3, padding=1))
    # the dilated 3x3 adds 2·2 steps of 8 pixels, the 1x1 nothing, the plain 3x3 2 steps
    assert receptive_field(head.modules(), field, jump) == (field + 32 + 16, 8)
    assert receptive_field([], 5, 2) == (5, 2)

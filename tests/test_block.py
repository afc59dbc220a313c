"""The residual ISA block starts as the identity and then learns."""

import torch

from ocnet_edu.backbones import DilatedResNet
from ocnet_edu.nn.residual import ResidualISABlock, insert_after


def test_block_is_identity_at_init_and_has_gradients():
    block = ResidualISABlock(16, groups=(2, 2)).train()
    x = torch.randn(2, 16, 8, 12, requires_grad=True)
    y = block(x)
    assert torch.equal(y, x)
    y.square().sum().backward()
    assert block.norm.weight.grad.abs().sum() > 0  # the zero scale gets a gradient and will move


def test_inserting_into_a_resnet_leaves_its_output_unchanged():
    torch.manual_seed(0)
    net = DilatedResNet(depth=50, base_width=4).eval()  # a narrow ResNet-50 with the real layout
    x = torch.randn(1, 3, 64, 64)
    before = net(x)
    net.layer3 = insert_after(net.layer3, ResidualISABlock(net.layer3[-1].conv3.out_channels, groups=(2, 2)))
    after = net(x)
    assert torch.equal(before.out, after.out) and torch.equal(before.aux, after.aux)
    assert any(isinstance(m, ResidualISABlock) for m in net.modules())


def test_without_zero_init_the_block_changes_the_output():
    block = ResidualISABlock(8, groups=(2, 2), zero_init=False).eval()
    x = torch.randn(1, 8, 4, 4)
    assert not torch.allclose(block(x), x)


def test_block_is_x_plus_bn_of_a_projection_of_isa():
    torch.manual_seed(0)
    block = ResidualISABlock(8, key_channels=2, value_channels=6, groups=(2, 2), stages=("local",), zero_init=False).eval()
    with torch.no_grad():
        block.norm.running_mean.uniform_(-1, 1)
        block.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 8, 4, 6)
    torch.testing.assert_close(block(x), x + block.norm(block.project(block.isa(x))))
    assert block.isa.stages == ("local",) and block.isa.out_channels == 8 and block.out_channels == 8
    assert block.project.bias is None  # BN follows: a bias would be cancelled by it
    shapes = {k: tuple(v.shape) for k, v in block.isa.state_dict().items()}
    assert shapes["local_stage.delta.weight"] == (6, 8, 1, 1) and shapes["local_stage.theta.0.0.weight"] == (2, 8, 1, 1)

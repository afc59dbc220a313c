"""Published weights (ocnet_edu.zoo.published) and the flavours of the attention blocks.

The key lists in ``tests/data/{openseg,mmseg}_*_keys.txt`` are the exact key sets and shapes of
the sources' models (openseg: built by its own ``lib/models`` with InPlace-ABN norms; mmseg:
ResNetV1c + ISAHead + FCNHead), 19 classes.
"""

from __future__ import annotations

import math

import numpy as np
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ocnet_edu.nn.attention import SelfAttention
from ocnet_edu.nn.flavour import FLAVOURS, Flavour, get_flavour
from ocnet_edu.nn.isa import InterlacedSparseSelfAttention, split_padding
from ocnet_edu.nn.layers import conv_bn_act
from ocnet_edu.zoo.published import (PRESETS, build_published, convert_state_dict, load_published,
                                     source_keys)

DATA = Path(__file__).parent / "data"
PUBLISHED = [("openseg", "isanet"), ("openseg", "base_ocnet"), ("openseg", "asp_ocnet"), ("mmseg", "isanet_r50-d8"),
             ("mmseg", "isanet_r101-d8")]


def published_keys(source: str, arch: str) -> dict[str, tuple[int, ...]]:
    lines = (DATA / f"{source}_{arch}_keys.txt").read_text().splitlines()
    return {k: tuple(int(n) for n in s.split("x")) if s else () for k, s in (line.split("\t") for line in lines)}


def fake_checkpoint(source: str, arch: str) -> dict[str, torch.Tensor]:
    keys = published_keys(source, arch)
    return {k: torch.zeros(shape, dtype=torch.long) if k.endswith("num_batches_tracked") else torch.rand(shape)
            for k, shape in keys.items()}


@pytest.mark.parametrize("source, arch", PUBLISHED)
def test_published_key_set_loads_exactly(source, arch):
    state = fake_checkpoint(source, arch)
    model = load_published({"state_dict": {f"module.{k}": v for k, v in state.items()}}, source, arch, 19)
    ours = model.state_dict()
    assert not model.training and model.preprocess == PRESETS[source]
    # every tensor of the file arrived somewhere: same multiset of element counts, and the classifier
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) == sum(
        v.numel() for k, v in ours.items() if "num_batches" not in k)
    head = "cls_head" if arch == "isanet" and source == "openseg" else ("cls" if source == "openseg" else
                                                                         "decode_head.conv_seg")
    assert torch.equal(ours["classifier.weight"], state[f"{head}.weight"])


def test_inplace_abn_weights_become_abs_plus_eps():
    state = fake_checkpoint("openseg", "isanet")
    state["isa_head.1.weight"] = -torch.arange(512, dtype=torch.float32)
    model = load_published(state, "openseg", "isanet", 19)
    expected = torch.arange(512, dtype=torch.float32) + 1e-5
    assert torch.equal(model.state_dict()["context.reduce.1.weight"], expected)


def test_asp_ocnet_key_mismatch_lists_the_keys():
    state = fake_checkpoint("openseg", "asp_ocnet")
    del state["context.2.conv4.1.running_var"]
    state["context.2.conv6.0.weight"] = torch.zeros(256, 512, 3, 3)
    with pytest.raises(ValueError, match=r"missing keys: context\.aspoc\.atrous\.dilated\.1\.1\.running_var.*"
                                         r"unexpected keys: <unmatched> context\.2\.conv6\.0\.weight"):
        load_published(state, "openseg", "asp_ocnet", 19)
    with pytest.raises(ValueError, match=r"69 missing keys: context\.reduce\.0\.weight.*<unmatched> oc_module_pre\.0"):
        load_published(fake_checkpoint("openseg", "base_ocnet"), "openseg", "asp_ocnet", 19)


def test_other_architecture_is_rejected_with_key_names():
    with pytest.raises(ValueError, match=r"missing keys: backbone\.conv1.*unexpected keys: <unmatched> backbone\.stem\.0"):
        load_published(fake_checkpoint("mmseg", "isanet_r50-d8"), "openseg", "isanet", 19)
    with pytest.raises(ValueError, match=r"missing keys: .*backbone\.layer3\.(6|22)"):
        load_published(fake_checkpoint("mmseg", "isanet_r50-d8"), "mmseg", "isanet_r101-d8", 19)


def test_wrong_num_classes_names_the_classifier():
    with pytest.raises(ValueError, match=r"classifier\.weight \(file \(19, 512, 1, 1\) vs model \(150, 512, 1, 1\)\)"):
        load_published(fake_checkpoint("mmseg", "isanet_r50-d8"), "mmseg", "isanet_r50-d8", 150)


@pytest.mark.parametrize("source, arch, match", [("detectron", "isanet", "unknown source.*mmseg.*openseg"),
                                                 ("openseg", "ocrnet", "unknown arch.*base_ocnet.*isanet"),
                                                 ("mmseg", "isanet", "unknown arch.*isanet_r101-d8")])
def test_unknown_source_or_arch(source, arch, match):
    with pytest.raises(ValueError, match=match):
        load_published({}, source, arch, 19)


@pytest.mark.parametrize("source, arch", PUBLISHED[:4])
def test_round_trip_through_source_keys_is_exact(source, arch):
    torch.manual_seed(0)
    model = build_published(source, arch, 5, base_width=8)
    _random_bn_(model, 0)
    for module in model.modules():  # positive BN weights survive |γ| + ε up to ε
        if isinstance(module, torch.nn.BatchNorm2d):
            module.weight.data.abs_().add_(0.5)
    state = source_keys(model, source, arch)
    assert set(state) <= set(published_keys(source, arch)) | {k for k in state if "num_batches" in k}
    again = load_published(state, source, arch, 5, base_width=8)
    x = torch.randn(1, 3, 45, 70)
    eps = 1e-5 if source == "openseg" else 0.0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight += eps
        torch.testing.assert_close(again(x), model(x), rtol=1e-5, atol=1e-5)


# --- the flavours' building blocks against from-scratch computations -------------------------

def test_flavour_table_and_errors():
    assert get_flavour("paper") == Flavour("paper")
    assert FLAVOURS["openseg"].slope == 0.01 and FLAVOURS["mmseg"].slope == 0.0
    with pytest.raises(ValueError, match="unknown flavour 'torch'.*mmseg"):
        get_flavour("torch")
    with pytest.raises(ValueError, match="padding must be one of"):
        Flavour("x", padding="reflect")


@pytest.mark.parametrize("size, groups, expected", [((13, 11), (8, 8), (2, 3, 1, 2)), ((16, 8), (8, 8), (0, 0, 0, 0)),
                                                    ((97, 129), (8, 8), (3, 4, 3, 4))])
def test_split_padding(size, groups, expected):
    # (left, right, top, bottom): the smaller half first
    assert split_padding(size, groups) == expected
    left, right, top, bottom = expected
    assert (size[0] + top + bottom) % groups[0] == 0 and (size[1] + left + right) % groups[1] == 0


def _random_bn_(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.weight.data, m.bias.data, m.running_mean):
                t.copy_(torch.randn(t.shape, generator=g))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _scratch_conv_bn_act(seq, x, slope):
    conv, bn = seq[0], seq[1]
    y = torch.einsum("oi,bihw->bohw", conv.weight[:, :, 0, 0], x)
    if conv.bias is not None:
        y = y + conv.bias.view(1, -1, 1, 1)
    y = (y - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    y = y * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return torch.where(y > 0, y, slope * y)


@pytest.mark.parametrize("slope, bias", [(0.0, False), (0.01, True)])
def test_conv_bn_act_is_conv_then_bn_then_leaky(slope, bias):
    torch.manual_seed(0)
    block = conv_bn_act(6, 5, bias=bias, slope=slope).double().eval()
    _random_bn_(block, 1)
    x = torch.randn(2, 6, 4, 3, dtype=torch.float64)
    assert (block[0].bias is not None) == bias
    torch.testing.assert_close(block(x), _scratch_conv_bn_act(block, x, slope))
    assert slope == 0 or (block(x) < 0).any()  # the leaky part is really used


def _scratch_attention(sa: SelfAttention, x: torch.Tensor) -> torch.Tensor:
    """One self-attention block, computed position by position (Eq. 10-11, the flavour's ρ)."""
    f = sa.flavour
    q, k = x, x
    for layer in sa.theta:
        q = _scratch_conv_bn_act(layer, q, f.slope)
    for layer in sa.phi:
        k = _scratch_conv_bn_act(layer, k, f.slope)
    v = torch.einsum("oi,bihw->bohw", sa.delta.weight[:, :, 0, 0], x)
    if sa.delta.bias is not None:
        v = v + sa.delta.bias.view(1, -1, 1, 1)
    b, _, h, w = x.shape
    q, k, v = (t.reshape(b, t.shape[1], h * w) for t in (q, k, v))
    weights = torch.softmax(torch.einsum("bdn,bdm->bnm", q, k) / math.sqrt(sa.key_channels), dim=-1)
    out = torch.einsum("bnm,bem->ben", weights, v).reshape(b, -1, h, w)
    if f.rho == "conv":
        return torch.einsum("oi,bihw->bohw", sa.rho.weight[:, :, 0, 0], out) + sa.rho.bias.view(1, -1, 1, 1)
    return _scratch_conv_bn_act(sa.rho, out, f.slope)


@pytest.mark.parametrize("flavour", sorted(FLAVOURS))
def test_self_attention_flavours_match_scratch(flavour):
    torch.manual_seed(0)
    sa = SelfAttention(8, 4, 6, 8, flavour=flavour).double().eval()
    _random_bn_(sa, 2)
    x = torch.randn(2, 8, 5, 3, dtype=torch.float64)
    f = FLAVOURS[flavour]
    assert (sa.delta.bias is not None) == f.value_bias and (sa.theta[0][0].bias is not None) == f.key_bias
    torch.testing.assert_close(sa(x), _scratch_attention(sa, x))


def _scratch_isa_zeros_split(isa: InterlacedSparseSelfAttention, x: torch.Tensor) -> torch.Tensor:
    """openseg/mmseg ISA from scratch: pad split, attend inside index sets, crop (no masks)."""
    p_h, p_w = isa.groups
    left, right, top, bottom = split_padding(tuple(x.shape[-2:]), isa.groups)
    y = F.pad(x, (left, right, top, bottom))
    big_h, big_w = y.shape[-2:]
    q_h, q_w = big_h // p_h, big_w // p_w
    rows, cols = torch.meshgrid(torch.arange(big_h), torch.arange(big_w), indexing="ij")
    for stage in ("global", "local"):
        module = isa.stage(stage)
        out = torch.empty(y.shape[0], isa.out_channels, big_h, big_w, dtype=y.dtype)
        group_of = (rows % p_h) * p_w + cols % p_w if stage == "global" else (rows // p_h) * q_w + cols // p_w
        for g in group_of.unique():
            where = group_of == g
            r, c = rows[where], cols[where]
            members = y[:, :, r, c].unsqueeze(-1)  # [B, C, n, 1]: the group as a tiny map
            out[:, :, r, c] = _scratch_attention(module, members)[..., 0]
        y = out
    return y[..., top:big_h - bottom, left:big_w - right]


@pytest.mark.parametrize("flavour", ["openseg", "mmseg"])
@pytest.mark.parametrize("size", [(10, 13), (8, 12)])
def test_isa_zeros_split_matches_scratch(flavour, size):
    torch.manual_seed(0)
    isa = InterlacedSparseSelfAttention(6, 4, 5, 6, groups=(4, 3), flavour=flavour).double().eval()
    _random_bn_(isa, 3)
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    torch.testing.assert_close(isa(x), _scratch_isa_zeros_split(isa, x))


def test_padding_modes_differ_only_when_padding_is_needed():
    torch.manual_seed(0)
    paper = InterlacedSparseSelfAttention(6, 4, 5, 6, groups=(4, 4), flavour=Flavour("p", rho="conv_bn_act")).double()
    split = InterlacedSparseSelfAttention(6, 4, 5, 6, groups=(4, 4), flavour=Flavour("s", padding="zeros-split",
                                                                                    rho="conv_bn_act")).double()
    split.load_state_dict(paper.state_dict())
    paper.eval(), split.eval()
    x = torch.randn(1, 6, 8, 12, dtype=torch.float64)
    torch.testing.assert_close(paper(x), split(x))
    x = torch.randn(1, 6, 9, 12, dtype=torch.float64)
    assert (paper(x) - split(x)).abs().max() > 1e-6


def test_preprocess_presets():
    rgb = torch.tensor([1.0, 0.5, 0.0]).view(1, 3, 1, 1)
    openseg = PRESETS["openseg"](rgb).flatten()
    torch.testing.assert_close(openseg, torch.tensor([0.0 - 102.9801, 127.5 - 115.9465, 255.0 - 122.7717]))
    mmseg = PRESETS["mmseg"](rgb).flatten()
    torch.testing.assert_close(mmseg, torch.tensor([(255 - 123.675) / 58.395, (127.5 - 116.28) / 57.12,
                                                    (0 - 103.53) / 57.375]))
    assert PRESETS["openseg"].align_corners and not PRESETS["mmseg"].align_corners


def test_infer_cli_writes_maps_for_a_tiny_published_model(tmp_path):
    from PIL import Image

    from ocnet_edu.__main__ import main
    from ocnet_edu.engine.infer import pixel_relation

    torch.manual_seed(0)
    model = build_published("openseg", "isanet", 4, base_width=8)
    with torch.no_grad():  # constant keys in the local stage: uniform weights over its 8x8 group
        model.context.ocp.local_stage.phi[1][0].weight.zero_()
    path = tmp_path / "tiny.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source_keys(model, "openseg", "isanet").items()}}, path)
    image = (torch.rand(37, 53, 3) * 255).byte().numpy()
    Image.fromarray(image).save(tmp_path / "street.png")
    out = tmp_path / "out"
    assert main(["infer", str(tmp_path / "street.png"), "--published", "openseg:isanet", str(path), "--num-classes",
                 "4", "--out", str(out), "--relation-at", "10,20", "--device", "cpu"]) == 0
    labels = np.asarray(Image.open(out / "street_labels.png"))
    assert labels.shape == (37, 53) and labels.max() < 4
    assert np.asarray(Image.open(out / "street_overlay.png")).shape == (37, 53, 3)
    assert np.asarray(Image.open(out / "street_relation.png")).shape == (37, 53)
    # the relation row is a distribution over the real cells plus the padded ones (openseg flavour)
    loaded = load_published(path, "openseg", "isanet", 4)
    x = loaded.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    relation, padded = pixel_relation(loaded, x, (10, 20))
    # features 5x7, padded to one 8x8 local group: 29 of its 64 members are padding
    assert relation.shape == (5, 7) and abs(padded - 29 / 64) < 1e-5
    assert abs(float(relation.sum()) + padded - 1) < 1e-5


def test_infer_cli_needs_a_model(tmp_path, capsys):
    from ocnet_edu.__main__ import main

    with pytest.raises(SystemExit):
        main(["infer", "x.png", "--out", str(tmp_path)])
    assert "--published" in capsys.readouterr().err


class _NotATensor:
    """Any custom class: loading it would need arbitrary unpickling."""


def test_published_checkpoint_file_is_loaded_without_arbitrary_unpickling(tmp_path):
    """Published files are read with ``weights_only=True`` like every other checkpoint: a file
    holding other objects is refused with a message naming it, before any code could run."""
    import torch

    from ocnet_edu.zoo.published import load_published

    path = tmp_path / "crafted.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "meta": _NotATensor()}, path)
    with pytest.raises(ValueError, match="crafted.pth"):
        load_published(path, "openseg", "isanet", 19)


# --- openseg's ASP-OC: max-pooled SA, up-sampled with align_corners=True ---------------------

def _scratch_max_pool_floor(x: torch.Tensor, k: int) -> torch.Tensor:
    """k×k max pooling that drops an incomplete last row/column (nn.MaxPool2d's floor mode)."""
    b, c, h, w = x.shape
    x = x[..., : h // k * k, : w // k * k]
    return x.reshape(b, c, h // k, k, w // k, k).amax(dim=(3, 5))


def _scratch_resize_align_corners(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resizing whose corner pixels map onto corner pixels, as a product of two
    interpolation matrices (source position i·(n−1)/(N−1) of output i)."""
    def matrix(n_in: int, n_out: int) -> torch.Tensor:
        m = torch.zeros(n_out, n_in, dtype=x.dtype)
        for i in range(n_out):
            pos = i * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
            lo = min(int(math.floor(pos)), n_in - 1)
            hi = min(lo + 1, n_in - 1)
            m[i, lo] += 1 - (pos - lo)
            m[i, hi] += pos - lo
        return m
    rows, cols = matrix(x.shape[-2], size[0]), matrix(x.shape[-1], size[1])
    return torch.einsum("Hh,bchw,Ww->bcHW", rows, x, cols)


@pytest.mark.parametrize("size", [(9, 13), (8, 12), (5, 2)])
def test_openseg_oc_downsampled_ocp_matches_scratch(size):
    from ocnet_edu.heads.ocp import run_ocp

    torch.manual_seed(0)
    sa = SelfAttention(6, 4, 5, 6, flavour="openseg_oc").double().eval()
    _random_bn_(sa, 4)
    x = torch.randn(2, 6, *size, dtype=torch.float64)
    expected = _scratch_resize_align_corners(_scratch_attention(sa, _scratch_max_pool_floor(x, 2)), size)
    torch.testing.assert_close(run_ocp(sa, x, 2, flavour="openseg_oc"), expected)
    # the paper's flavour pools and resizes otherwise (average, ceil mode, align_corners=False)
    assert (run_ocp(sa, x, 2) - expected).abs().max() > 1e-3


def test_max_floor_pooling_needs_a_map_of_at_least_the_window():
    from ocnet_edu.heads.ocp import run_ocp

    sa = SelfAttention(6, flavour="openseg_oc").eval()
    with pytest.raises(ValueError, match="1x5 map is smaller than the 2x2 max-pooling window of flavour 'openseg_oc'"):
        run_ocp(sa, torch.randn(1, 6, 1, 5), 2, flavour="openseg_oc")


def _scratch_conv_bn_leaky(seq, x, slope, dilation=1):
    conv, bn = seq[0], seq[1]
    y = F.conv2d(x, conv.weight, conv.bias, padding=dilation * (conv.kernel_size[0] // 2), dilation=dilation)
    return _scratch_bn_leaky(bn, y, slope)


def _scratch_bn_leaky(bn, y, slope):
    y = (y - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    y = y * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    return torch.where(y > 0, y, slope * y)


def test_openseg_asp_oc_options_match_scratch():
    """ASPOC with openseg's options, against the module written out branch by branch."""
    from ocnet_edu.heads.asp_oc import ASPOC

    torch.manual_seed(0)
    asp = ASPOC(10, ocp="sa", channels=6, dilations=(1, 2, 3), ocp_downsample=2, out_channels=12, flavour="openseg_oc",
                reduce_bias=True, slope=0.01, context_norm=True).double().eval()
    _random_bn_(asp, 5)
    x = torch.randn(2, 10, 7, 9, dtype=torch.float64)
    slope = 0.01
    assert asp.reduce[0].bias is not None and asp.atrous.pointwise[0].bias is None
    reduced = _scratch_conv_bn_leaky(asp.reduce, x, slope)
    context = _scratch_resize_align_corners(_scratch_attention(asp.ocp, _scratch_max_pool_floor(reduced, 2)), (7, 9))
    branches = [_scratch_bn_leaky(asp.context_norm[0], context, slope),
                _scratch_conv_bn_leaky(asp.atrous.pointwise, x, slope)]
    branches += [_scratch_conv_bn_leaky(conv, x, slope, rate) for conv, rate in zip(asp.atrous.dilated, (1, 2, 3))]
    expected = _scratch_conv_bn_leaky(asp.fuse, torch.cat(branches, dim=1), slope)
    out = asp(x)
    assert out.shape == (2, 12, 7, 9)
    torch.testing.assert_close(out, expected)


def test_published_scores_name_loadable_models_near_the_paper():
    from ocnet_edu.paper import load_table
    from ocnet_edu.zoo.published import ARCHS, PUBLISHED_MIOU

    assert all(arch in ARCHS[source] for source, arch in PUBLISHED_MIOU)
    base_oc = load_table(5).set_index("context_module").loc[["base_oc_sa", "base_oc_isa"], "miou_pct"]
    # a model zoo's Base-OC / ISA checkpoint scores within a point of the paper's Base-OC rows
    assert all((base_oc - score).abs().max() < 1 for score in PUBLISHED_MIOU.values())

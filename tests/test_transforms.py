"""Training transforms of Sec. 4.2: behaviour of each step and image/label alignment."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ocnet_edu.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Compose,
    Normalize,
    RandomBrightness,
    RandomCrop,
    RandomHorizontalFlip,
    RandomScale,
    eval_transforms,
    paper_train_transforms,
)

CODE = 9.0  # the test images store label k as the grey value CODE * k


def block_pair(seed: int, h: int = 40, w: int = 56, block: int = 8, classes: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """A label made of ``block``×``block`` tiles of random classes (some tiles 255) and an image
    whose three channels equal ``CODE * label`` (0 on ignored pixels)."""
    g = torch.Generator().manual_seed(seed)
    tiles = torch.randint(0, classes, (h // block, w // block), generator=g)
    tiles[torch.rand(tiles.shape, generator=g) < 0.1] = 255
    label = tiles.repeat_interleave(block, 0).repeat_interleave(block, 1)
    image = torch.where(label == 255, 0, label).float().mul(CODE).expand(3, h, w).clone()
    return image, label


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_flip() -> None:
    image, label = block_pair(0)
    flipped = RandomHorizontalFlip(p=1.0)(image, label, gen(0))
    assert torch.equal(flipped[0], image.flip(-1)) and torch.equal(flipped[1], label.flip(-1))
    kept = RandomHorizontalFlip(p=0.0)(image, label, gen(0))
    assert torch.equal(kept[0], image) and torch.equal(kept[1], label)
    assert RandomHorizontalFlip().p == 0.5 and RandomBrightness().delta == 10.0  # Sec. 4.2
    # class 0 may be one side of a left/right pair; negative or repeated ids may not
    assert RandomHorizontalFlip(1.0, [(0, 1)])(image, label, gen(0))[1].eq(0).sum() == label.eq(1).sum()
    for bad in ([(-1, 2)], [(1, 2), (2, 3)]):
        with pytest.raises(ValueError, match="flip pairs"):
            RandomHorizontalFlip(1.0, bad)


def test_scale_range_and_modes() -> None:
    image, label = block_pair(1)
    sizes = set()
    for seed in range(30):
        out_img, out_lab = RandomScale((0.5, 2.0))(image, label, gen(seed))
        h, w = out_lab.shape
        assert out_img.shape == (3, h, w)
        assert 20 <= h <= 80 and 28 <= w <= 112
        assert set(out_lab.unique().tolist()) <= set(label.unique().tolist())  # nearest: no new labels
        sizes.add((h, w))
    assert len(sizes) > 10
    fixed_img, fixed_lab = RandomScale((2.0, 2.0))(image, label, gen(0))
    assert torch.equal(fixed_lab, label.repeat_interleave(2, 0).repeat_interleave(2, 1))
    for bad in ((2.0, 1.0), (0.0, 1.0)):
        with pytest.raises(ValueError, match="scale_range"):
            RandomScale(bad)
    with pytest.raises(ValueError, match="image_mode"):
        RandomScale(image_mode="bicubic")
    # a scale that rounds a side to 0 pixels keeps one pixel of each
    tiny_img, tiny_lab = RandomScale((0.1, 0.1))(image[:, :3, :4], label[:3, :4], gen(0))
    assert tiny_img.shape == (3, 1, 1) and tiny_lab.shape == (1, 1)
    # bilinear (the default) resamples at pixel centres, like F.interpolate without align_corners
    bilinear, _ = RandomScale((1.5, 1.5))(image, label, gen(0))
    reference = F.interpolate(image[None], size=(60, 84), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(bilinear, reference, atol=1e-4)  # last bits depend on the thread count


def test_scale_base_size() -> None:
    image, label = block_pair(2)
    _, out = RandomScale((1.0, 1.0), base_size=28)(image, label, gen(0))
    assert out.shape == (20, 28)
    _, out = RandomScale((1.5, 1.5), base_size=28)(image, label, gen(0))  # the factor multiplies
    assert out.shape == (30, 42)


def test_brightness_adds_one_offset_within_range() -> None:
    image = torch.full((3, 5, 6), 100.0)
    image[1] = 120.0
    offsets = []
    for seed in range(50):
        out, _ = RandomBrightness(10.0)(image, torch.zeros(5, 6, dtype=torch.long), gen(seed))
        shift = out - image
        assert torch.allclose(shift, shift.flatten()[0].expand_as(shift))
        offsets.append(float(shift.flatten()[0]))
    assert -10 <= min(offsets) < -5 and 5 < max(offsets) <= 10
    clipped, _ = RandomBrightness(10.0)(torch.full((3, 2, 2), 255.0), torch.zeros(2, 2, dtype=torch.long), gen(1))
    assert float(clipped.max()) <= 255.0


def test_crop_pads_with_mean_and_ignore() -> None:
    image = torch.zeros(3, 4, 5)
    label = torch.zeros(4, 5, dtype=torch.long)
    out_img, out_lab = RandomCrop((10, 12))(image, label, gen(0))
    assert out_img.shape == (3, 10, 12) and out_lab.shape == (10, 12)
    assert int((out_lab == 255).sum()) == 10 * 12 - 4 * 5
    padded = out_lab == 255
    for c, mean in enumerate(IMAGENET_MEAN):
        assert torch.allclose(out_img[c][padded], torch.tensor(mean))
    assert torch.equal(out_img[:, :4, :5], image)
    # the padded image keeps the input's dtype (a float64 image is not rounded to float32)
    fine = torch.full((3, 4, 5), 1 / 3, dtype=torch.float64)
    out64, _ = RandomCrop((6, 6), image_fill=(1 / 3,) * 3)(fine, label, gen(0))
    assert out64.dtype == torch.float64 and torch.equal(out64, torch.full((3, 6, 6), 1 / 3, dtype=torch.float64))


def test_crop_positions_cover_the_image() -> None:
    image = torch.arange(20.0).view(1, 4, 5).expand(3, 4, 5)
    label = torch.arange(20).view(4, 5)
    corners = {int(RandomCrop((2, 2))(image, label, gen(s))[1][0, 0]) for s in range(200)}
    assert corners == {r * 5 + c for r in range(3) for c in range(4)}


def test_normalize() -> None:
    image = torch.tensor(IMAGENET_MEAN).view(3, 1, 1).expand(3, 2, 2)
    out, _ = Normalize()(image, torch.zeros(2, 2, dtype=torch.long))
    assert torch.allclose(out, torch.zeros_like(out), atol=1e-6)


def test_paper_pipeline_is_sec_4_2() -> None:
    """Defaults are Sec. 4.2's: flip (p = 0.5), scale U[0.5, 2], brightness U[-10, 10], crop padded
    with the mean, ImageNet normalisation, in that order; the switches drop or keep steps."""
    pipe = paper_train_transforms((24, 32), flip_pairs=[(3, 4)])
    flip, scale, bright, crop, norm = pipe.transforms
    assert isinstance(flip, RandomHorizontalFlip) and flip.p == 0.5 and flip.pairs == ((3, 4),)
    assert isinstance(scale, RandomScale) and scale.scale_range == (0.5, 2.0) and scale.base_size is None
    assert isinstance(bright, RandomBrightness) and bright.delta == 10.0
    assert isinstance(crop, RandomCrop) and crop.crop_size == (24, 32) and crop.image_fill == pytest.approx(IMAGENET_MEAN)
    assert isinstance(norm, Normalize)
    assert norm.mean.flatten().tolist() == pytest.approx(IMAGENET_MEAN)
    assert norm.std.flatten().tolist() == pytest.approx(IMAGENET_STD)
    bare = paper_train_transforms((8, 8), normalize=False, hflip=False)
    assert [type(t) for t in bare.transforms] == [RandomHorizontalFlip, RandomScale, RandomBrightness, RandomCrop]
    assert bare.transforms[0].p == 0.0


def test_paper_pipeline_passes_its_arguments_to_its_steps() -> None:
    mean, std = (1.0, 2.0, 3.0), (4.0, 5.0, 6.0)
    pipe = paper_train_transforms((8, 8), scale_range=(0.75, 1.25), brightness=4.0, mean=mean, std=std, base_size=64)
    _, scale, bright, crop, norm = pipe.transforms
    assert scale.scale_range == (0.75, 1.25) and scale.base_size == 64 and bright.delta == 4.0
    assert crop.image_fill == mean
    assert norm.mean.flatten().tolist() == list(mean) and norm.std.flatten().tolist() == list(std)


def test_eval_pipeline_only_normalizes_with_the_given_statistics() -> None:
    image = torch.full((3, 2, 2), 10.0)
    label = torch.zeros(2, 2, dtype=torch.long)
    out, same = eval_transforms(mean=(2.0, 4.0, 6.0), std=(2.0, 3.0, 4.0))(image, label, gen(0))
    assert out[:, 0, 0].tolist() == [4.0, 2.0, 1.0] and same is label
    default, _ = eval_transforms()(torch.tensor(IMAGENET_MEAN).view(3, 1, 1) + torch.tensor(IMAGENET_STD).view(3, 1, 1), label[:1, :1], gen(0))
    assert default.flatten().tolist() == pytest.approx([1.0, 1.0, 1.0])


def test_reprs_name_each_step_and_its_settings() -> None:
    pipe = Compose([RandomHorizontalFlip(0.5), RandomHorizontalFlip(1.0, [(1, 2)]), RandomBrightness(3)])
    assert repr(pipe) == (
        "Compose(RandomHorizontalFlip(p=0.5), RandomHorizontalFlip(p=1.0, pairs=((1, 2),)), RandomBrightness(delta=3.0))"
    )
    assert repr(Compose([])) == "Compose()"
    assert repr(RandomScale((0.5, 2), 64, "nearest-exact")) == "RandomScale(scale_range=(0.5, 2.0), base_size=64, image_mode='nearest-exact')"
    assert repr(RandomCrop((8, 9))) == "RandomCrop(crop_size=(8, 9))"
    assert repr(Normalize((1, 2, 3), (4, 5, 6))) == "Normalize(mean=[1.0, 2.0, 3.0], std=[4.0, 5.0, 6.0])"


def test_pipeline_reproducible_from_generator_seed() -> None:
    image, label = block_pair(3)
    pipe = paper_train_transforms((24, 24))
    a, b, c = pipe(image, label, gen(7)), pipe(image, label, gen(7)), pipe(image, label, gen(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (3, 24, 24) and a[1].shape == (24, 24)
    assert not (torch.equal(a[0], c[0]) and torch.equal(a[1], c[1]))


@pytest.mark.parametrize("seed", range(40))
def test_alignment_exact_with_nearest_scaling(seed: int) -> None:
    """Flip, scale (nearest for both) and crop: every non-ignored label pixel is still encoded."""
    image, label = block_pair(seed)
    pipe = Compose([RandomHorizontalFlip(), RandomScale((0.5, 2.0), image_mode="nearest-exact"), RandomCrop((32, 48))])
    out_img, out_lab = pipe(image, label, gen(1000 + seed))
    keep = out_lab != 255
    assert keep.any()
    assert torch.equal(out_img[:, keep], (out_lab[keep].float() * CODE).expand(3, -1))


@pytest.mark.parametrize("seed", range(40))
def test_alignment_bilinear_on_interior_pixels(seed: int) -> None:
    """The paper's pipeline (bilinear image): on pixels whose 3×3 label neighbourhood is constant
    and not ignored, the image still encodes the label (up to the brightness offset)."""
    image, label = block_pair(seed)
    pipe = Compose([RandomHorizontalFlip(), RandomScale((0.5, 2.0)), RandomBrightness(10.0), RandomCrop((32, 48))])
    out_img, out_lab = pipe(image, label, gen(2000 + seed))
    lab = out_lab.float()[None, None]
    differs = F.max_pool2d(lab, 3, 1, 1) != -F.max_pool2d(-lab, 3, 1, 1)
    interior = ~differs[0, 0] & (out_lab != 255)
    interior[[0, -1], :] = False
    interior[:, [0, -1]] = False
    assert interior.any()
    codes = out_lab[interior].float() * CODE
    unclipped = codes >= 10  # pixels that the brightness offset cannot push below 0
    assert unclipped.any()
    offset = float(out_img[0, interior][unclipped][0] - codes[unclipped][0])
    assert -10 <= offset <= 10
    expected = (codes + offset).clamp(0, 255).expand(3, -1)
    assert torch.allclose(out_img[:, interior], expected, atol=1e-3)

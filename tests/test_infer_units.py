"""``ocnet_edu.engine.infer``'s pieces one by one: image reading, palette, relation rows and maps."""

from __future__ import annotations

import copy
import numpy as np
import pytest
import torch
from PIL import Image

from ocnet_edu.analysis import ocp_relation
from ocnet_edu.config import load_config
from ocnet_edu.engine.builders import build_model
from ocnet_edu.engine.infer import CITYSCAPES_COLOURS, _save_relation, infer_images, palette, pixel_relation, read_image


def test_read_image_is_rgb_in_0_1_with_a_batch_axis(tmp_path):
    pixels = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3) * 15  # values 0..255
    Image.fromarray(pixels).save(tmp_path / "x.png")
    image = read_image(tmp_path / "x.png")
    assert image.shape == (1, 3, 2, 3) and image.dtype == torch.float32
    assert torch.equal(image[0], torch.from_numpy(pixels).permute(2, 0, 1).float() / 255.0)


def test_palette_is_cityscapes_for_19_classes_and_a_fixed_full_range_one_otherwise():
    assert palette(19) is CITYSCAPES_COLOURS
    colours = palette(200)
    assert colours.shape == (200, 3) and colours.dtype == np.uint8
    assert np.array_equal(colours, palette(200)) and np.array_equal(palette(5), colours[:5])  # seeded
    assert colours.min() == 0 and colours.max() == 255
    assert np.array_equal(palette(5), np.random.default_rng(0).integers(0, 256, (5, 3), dtype=np.uint8))


def test_a_relation_map_is_scaled_to_255_at_its_maximum_and_repeats_each_cell(tmp_path):
    relation = torch.tensor([[0.0, 0.1], [0.2, 0.4]], dtype=torch.float64)
    _save_relation(relation, (4, 6), tmp_path / "r.png")
    saved = np.asarray(Image.open(tmp_path / "r.png"))
    cells = np.array([[0, 64], [128, 255]], dtype=np.uint8)  # round(255 · value / 0.4)
    assert saved.dtype == np.uint8 and np.array_equal(saved, cells.repeat(2, axis=0).repeat(3, axis=1))
    _save_relation(torch.zeros(2, 2), (2, 2), tmp_path / "z.png")  # no weight anywhere: black, not NaN
    assert not np.asarray(Image.open(tmp_path / "z.png")).any()


@pytest.fixture(scope="module", params=[("base_oc_sa", "{channels: 32}"), ("base_oc_isa", "{channels: 32, groups: [2, 2]}")])
def model(request):
    context, options = request.param
    cfg = load_config("configs/synthetic.yaml", [f"model.context={context}", f"model.context_options={options}"])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_pixel_relation_is_the_row_of_the_cell_under_the_pixel(model):
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))  # features 4 × 8 (stride 8)
    with torch.no_grad():
        rows = ocp_relation(model.context.ocp, model.context.reduce(model.backbone(x).out))[0]
    for row, col in [(0, 0), (1, 5), (3, 7), (2, 0)]:
        for dy, dx in [(0, 0), (7, 7)]:  # the first and the last image pixel of the cell
            relation, padded = pixel_relation(model, x, (8 * col + dx, 8 * row + dy))
            assert relation.shape == (4, 8) and torch.equal(relation, rows[8 * row + col].reshape(4, 8))
            # the paper's masked padding (and SA) give padding no weight: exactly 0 for SA
            assert padded == 0.0 if model.context.ocp.__class__.__name__ == "SelfAttention" else abs(padded) < 1e-6


def test_pixel_relation_of_sa_has_no_padded_mass_even_where_its_row_sums_to_1_only_up_to_rounding():
    """SA sees the map unpadded: its padded mass is 0 by definition, not 1 − (a float32 sum of weights)."""
    cfg = load_config("configs/synthetic.yaml", ["model.context=base_oc_sa", "model.context_options={channels: 32}"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for weight in model.context.ocp.parameters():  # sharper attention: rows no longer sum to 1 exactly
            weight.mul_(5)
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        rows = ocp_relation(model.context.ocp, model.context.reduce(model.backbone(x).out))[0]
    inexact = [i for i in range(32) if float(rows[i].sum()) != 1.0]
    assert inexact, "every row summed to 1 exactly: the test needs one that does not"
    for i in inexact:
        relation, padded = pixel_relation(model, x, (8 * (i % 8), 8 * (i // 8)))
        assert torch.equal(relation, rows[i].reshape(4, 8)) and padded == 0.0


@pytest.mark.parametrize("at", [(64, 0), (0, 32), (-1, 3), (3, -1)])
def test_pixel_relation_refuses_a_pixel_outside_the_image(model, at):
    x = torch.zeros(1, 3, 32, 64)
    with pytest.raises(ValueError, match=rf"^--relation-at {at[0]},{at[1]} is not a pixel of the image: "
                                         r"x must be in 0\.\.63 and y in 0\.\.31$"):
        pixel_relation(model, x, at)


def test_infer_images_writes_labels_overlay_and_relation_of_each_image(model, tmp_path):
    """A float64 model (the input follows its dtype), two images, a relation map each."""
    model = copy.deepcopy(model).double()
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
        paths.append(str(tmp_path / f"{name}.png"))
    out = tmp_path / "maps" / "run"
    preprocess = lambda image: image * 2 - 1  # noqa: E731
    for _ in range(2):  # the folder is made, and may exist already
        written = infer_images(model, preprocess, paths, out, relation_at=(40, 3))
    assert written == [out / f"{stem}_{kind}.png" for stem in ("a", "b") for kind in ("labels", "overlay", "relation")]
    image = read_image(paths[1])
    with torch.no_grad():
        labels = model(preprocess(image).double()).argmax(1)[0].numpy().astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(out / "b_labels.png")), labels)
    rgb = image[0].permute(1, 2, 0).numpy() * 255  # the image, half and half with the colour of each label
    overlay = np.round(0.5 * rgb + 0.5 * palette(model.num_classes)[labels]).astype(np.uint8)
    assert np.array_equal(np.asarray(Image.open(out / "b_overlay.png")), overlay)
    relation, _ = pixel_relation(model, preprocess(image).double(), (40, 3))
    _save_relation(relation, (32, 48), tmp_path / "expected.png")
    assert np.array_equal(np.asarray(Image.open(out / "b_relation.png")), np.asarray(Image.open(tmp_path / "expected.png")))

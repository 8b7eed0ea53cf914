"""Multi-view image helpers (ComfyUI IMAGE layout [B, H, W, C])."""
import pytest
import torch

from magicboost_core.validate import OutputExistsError
from magicboost_core.geometry.presets import split_grid_for_preset
from magicboost_core.images import (
    composite_on_background, from_pil, mask_from_comfy, mask_to_comfy, resize_views, save_image_grid,
    split_grid, tile_grid, to_pil,
)


def labelled_grid(rows, cols, h, w, C=3):
    """A tiled image whose tile k (row-major) is filled with the value k / 255."""
    tiles = torch.arange(rows * cols, dtype=torch.float32).div(255).reshape(-1, 1, 1, 1).expand(-1, h, w, C)
    return tile_grid(tiles, rows, cols)


def test_split_grid_row_major():
    img = labelled_grid(2, 2, 3, 5)
    assert img.shape == (1, 6, 10, 3)
    views = split_grid(img, 2, 2)
    assert views.shape == (4, 3, 5, 3)
    assert [round(float(v[0, 0, 0]) * 255) for v in views] == [0, 1, 2, 3]
    assert torch.equal(split_grid(img[0], 2, 2), views)  # (H, W, C) accepted
    assert torch.equal(tile_grid(views, 2, 2), img)
    masks = split_grid(img[0, ..., 0], 2, 2)  # a single (H, W) mask splits the same way
    assert masks.shape == (4, 3, 5) and torch.equal(masks, views[..., 0])


def test_zero123pp_grid_is_three_rows_by_two_columns_of_320():
    img = labelled_grid(3, 2, 320, 320)
    assert img.shape == (1, 960, 640, 3)
    views = split_grid_for_preset(img, "instantmesh")
    assert views.shape == (6, 320, 320, 3)
    assert [round(float(v[0, 0, 0]) * 255) for v in views] == [0, 1, 2, 3, 4, 5]
    assert split_grid_for_preset(labelled_grid(2, 2, 4, 4), "instant3d").shape == (4, 4, 4, 3)


def test_grid_size_must_divide():
    with pytest.raises(ValueError, match=r"961 x 640.*3 x 2"):
        split_grid(torch.zeros(961, 640, 3), 3, 2)
    with pytest.raises(ValueError, match="batch"):
        split_grid(torch.zeros(2, 4, 4, 3), 2, 2)
    with pytest.raises(ValueError, match="channel-last"):
        split_grid(torch.zeros(1, 3, 6, 6), 2, 2)
    from magicboost_core.geometry.presets import custom_preset

    with pytest.raises(ValueError, match="no grid"):
        split_grid_for_preset(torch.zeros(4, 4, 3), custom_preset([0], [0, 90]))


def test_composite_and_masks():
    rgb = torch.tensor([0.2, 0.4, 0.6]).expand(2, 3, 3, 3)
    alpha = torch.zeros(2, 3, 3)
    alpha[:, 1, 1] = 1.0
    alpha[:, 0, 0] = 0.5
    out = composite_on_background(rgb, alpha)
    assert out.shape == (2, 3, 3, 3)
    assert torch.allclose(out[:, 1, 1], torch.tensor([0.2, 0.4, 0.6]))
    assert torch.allclose(out[:, 2, 2], torch.ones(3))
    assert torch.allclose(out[:, 0, 0], torch.tensor([0.6, 0.7, 0.8]))
    rgba = torch.cat([rgb, alpha[..., None]], -1)
    assert torch.allclose(composite_on_background(rgba), out)
    black = composite_on_background(rgba, color=0.0)
    assert torch.allclose(black[:, 2, 2], torch.zeros(3))
    with pytest.raises(ValueError, match="RGBA images or an alpha"):
        composite_on_background(rgb)
    # ComfyUI MASK: 1 = masked (transparent)
    comfy = torch.ones(3, 3)
    comfy[1, 1] = 0.0
    a = mask_from_comfy(comfy)
    assert a.shape == (1, 3, 3) and a[0, 1, 1] == 1 and a[0, 0, 0] == 0
    assert mask_from_comfy(torch.zeros(2, 4, 5)).shape == (2, 4, 5)
    assert torch.equal(mask_to_comfy(a), comfy[None])
    with pytest.raises(ValueError, match="MASK"):
        mask_from_comfy(torch.zeros(1, 2, 3, 4))


@pytest.mark.parametrize("mode", ["area", "bilinear", "bicubic", "nearest"])
def test_resize_views(mode):
    img = torch.full((2, 8, 6, 3), 0.25)
    out = resize_views(img, (4, 3), mode=mode)
    assert out.shape == (2, 4, 3, 3) and torch.allclose(out, torch.full_like(out, 0.25), atol=1e-6)
    assert resize_views(img, 16, mode=mode).shape == (2, 16, 16, 3)


def test_resize_area_averages_and_bad_mode():
    img = torch.zeros(1, 2, 2, 1)
    img[0, 0, 0] = 1.0
    assert float(resize_views(img, 1)[0, 0, 0, 0]) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="mode"):
        resize_views(img, 1, mode="lanczos")


def test_pil_round_trip():
    img = torch.randint(0, 256, (2, 5, 7, 4)).float() / 255
    pics = to_pil(img)
    assert len(pics) == 2 and pics[0].mode == "RGBA" and pics[0].size == (7, 5)
    assert torch.equal(from_pil(pics, mode="RGBA"), img)
    one = to_pil(img[0, ..., :3])
    assert one.mode == "RGB" and torch.equal(from_pil(one)[0], img[0, ..., :3])
    with pytest.raises(ValueError, match="different sizes"):
        from_pil([pics[0], one.resize((3, 3))])


def test_save_image_grid_refuses_to_overwrite(tmp_path):
    from PIL import Image

    views = labelled_grid(1, 5, 4, 6)
    views = split_grid(views, 1, 5)
    p = save_image_grid(views, tmp_path / "grid.png", ncols=3, padding=1)
    with Image.open(p) as im:
        assert im.size == (3 * 6 + 2, 2 * 4 + 1)
    with pytest.raises(OutputExistsError, match="grid.png"):
        save_image_grid(views, p)
    save_image_grid(views[:2], p, ncols=2, overwrite=True)
    with Image.open(p) as im:
        assert im.size == (12, 4)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["grid.png"]


def test_view_files_and_header_sizes(tmp_path):
    from PIL import Image

    from magicboost_core.images import ImageFileError, read_image_size, read_view_files

    paths = []
    for i, (w, h) in enumerate([(24, 16), (24, 16), (16, 24)]):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB" if i else "RGBA", (w, h), (10 * i, 0, 0)).save(paths[-1])
    assert read_image_size(paths[0]) == (24, 16)
    views = read_view_files(paths[:2])
    assert views.shape == (2, 16, 24, 4) and float(views[1, ..., 3].min()) == 1.0  # no alpha -> opaque
    with pytest.raises(ValueError, match="different sizes"):
        read_view_files(paths)
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ImageFileError, match="bad.png"):
        read_image_size(tmp_path / "bad.png", "view image")

"""Decoding: every mode becomes RGB, broken files raise an HHCLError naming them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hhcl.data.images import is_image_name, load_resized, read_image
from hhcl.errors import HHCLError


def test_image_names():
    assert all(is_image_name(name) for name in ("a.jpg", "b.JPEG", "c.png", "d.Bmp"))
    assert not any(is_image_name(name) for name in ("a.gif", "b.txt", "Thumbs.db", "jpg"))


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
    path = tmp_path / "grey.png"
    Image.fromarray(np.arange(32, dtype=np.uint8).reshape(4, 8) * 8, mode="L").save(path)
    image = read_image(path)
    pixels = np.asarray(image)
    assert image.mode == "RGB" and pixels.shape == (4, 8, 3)
    assert (pixels[..., 0] == pixels[..., 2]).all() and pixels[0, 1, 0] == 8


def test_rgba_drops_alpha(tmp_path):
    path = tmp_path / "rgba.png"
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    Image.fromarray(rgba, mode="RGBA").save(path)
    assert np.asarray(read_image(path))[0, 0].tolist() == [200, 0, 0]


def test_palette_with_and_without_transparency(tmp_path):
    palette = Image.new("P", (3, 2))
    palette.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    palette.putpixel((1, 0), 1)
    plain, transparent = tmp_path / "plain.png", tmp_path / "transparent.png"
    palette.save(plain)
    palette.save(transparent, transparency=0)
    for path in (plain, transparent):
        pixels = np.asarray(read_image(path))
        assert pixels[0, 0].tolist() == [255, 0, 0] and pixels[0, 1].tolist() == [0, 255, 0]


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16)).save(path)
    pixels = np.asarray(read_image(path))[0, :, 0]
    assert pixels.tolist() == [0, 128, 255]


def test_a_dark_sixteen_bit_image_stays_dark(tmp_path):
    path = tmp_path / "dark.png"
    Image.fromarray(np.array([[0, 4112, 8224]], dtype=np.uint16)).save(path)  # at most 1/8 of full scale
    assert np.asarray(read_image(path))[0, :, 0].tolist() == [0, 16, 32]  # scaled by the bit depth, not stretched


def test_the_exif_orientation_turns_a_phone_photo_upright(tmp_path):
    stored = np.zeros((16, 32, 3), dtype=np.uint8)  # stored landscape, 16 rows x 32 columns
    stored[:8, :8] = (255, 0, 0)  # a red top-left block (JPEG blurs single pixels)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "phone.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=100)
    pixels = np.asarray(read_image(path))
    assert pixels.shape == (32, 16, 3)  # portrait, as the camera held it
    assert pixels[2, 13, 0] > 200 and pixels[2, 2, 0] < 60  # the stored top-left is now top-right


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(path)
    red, green, blue = np.asarray(read_image(path))[2, 2].tolist()
    assert red > 200 and green < 60 and blue < 60


@pytest.mark.parametrize("content,expected", [(b"", "empty"), (b"GIF89a garbage", "cannot be decoded")])
def test_broken_files_name_themselves(tmp_path, content, expected):
    path = tmp_path / "broken.jpg"
    path.write_bytes(content)
    with pytest.raises(HHCLError, match=f"image {path} .*{expected}.*delete or replace it"):
        read_image(path)
    with pytest.raises(HHCLError, match=f"image {tmp_path / 'gone.jpg'} not found"):
        read_image(tmp_path / "gone.jpg")


def test_load_resized_is_pillow_bicubic(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (50, 23, 3), dtype=np.uint8)
    path = tmp_path / "odd.png"
    Image.fromarray(pixels).save(path)
    tensor = load_resized(path, 256, 128)
    expected = np.array(Image.fromarray(pixels).resize((128, 256), Image.Resampling.BICUBIC))
    assert tensor.dtype == torch.uint8 and tensor.shape == (3, 256, 128)
    assert torch.equal(tensor, torch.from_numpy(expected).permute(2, 0, 1))
    # Already the right size: the pixels pass through untouched.
    assert torch.equal(load_resized(path, 50, 23), torch.from_numpy(pixels).permute(2, 0, 1))

"""Image decoding follows cv2.imread's colour semantics and refuses what it cannot honestly read."""
import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from conftest import GOLDEN
from grafiqs.data.decode import MAX_PIXELS, decode_image, normalize, read_image, to_model_tensor
from grafiqs.errors import ImageError

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (112, 112, 3), dtype=np.uint8)


def encoded(array, extension=".png") -> bytes:
    return cv2.imencode(extension, array)[1].tobytes()


def test_gray_rgba_and_16_bit_become_8_bit_three_channel_like_imread(tmp_path):
    for name in ("gray.png", "rgba.png"):
        path = GOLDEN / "images" / name
        assert np.array_equal(read_image(path), cv2.imread(str(path)))
    deep = (RNG.random((40, 50)) * 65535).astype(np.uint16)
    path = tmp_path / "deep.png"
    cv2.imwrite(str(path), deep)
    assert np.array_equal(read_image(path), cv2.imread(str(path)))


def test_bgr2rgb_swaps_channels():
    assert np.array_equal(decode_image(encoded(IMAGE), bgr2rgb=True), IMAGE[:, :, ::-1])


def test_cmyk_jpeg_and_exif_orientation_match_imread(tmp_path):
    cmyk = tmp_path / "cmyk.jpg"
    Image.fromarray(IMAGE[:, :, ::-1]).convert("CMYK").save(cmyk, "JPEG")
    assert np.array_equal(read_image(cmyk), cv2.imread(str(cmyk)))
    rotated = tmp_path / "exif.jpg"
    picture = Image.fromarray(IMAGE[:, :80])
    exif = picture.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    picture.save(rotated, "JPEG", exif=exif)
    assert read_image(rotated).shape == (80, 112, 3) == cv2.imread(str(rotated)).shape


def test_non_ascii_and_space_paths(tmp_path):
    path = tmp_path / "Gesichter mit Ümlaut" / "José 1.png"
    path.parent.mkdir()
    path.write_bytes(encoded(IMAGE))
    assert np.array_equal(read_image(path), IMAGE)


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "empty file"),
        (b"plain text with a .png name", "not a decodable image"),
        (encoded(IMAGE, ".jpg")[:500], "truncated JPEG"),
        (encoded(IMAGE)[:200], "not a decodable image"),
    ],
)
def test_bad_bytes_raise_image_error(data, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image(data, source="x.png")


def test_decompression_bomb_is_refused_before_decoding():
    side = int(MAX_PIXELS**0.5) + 100
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, "PNG")  # tiny file, huge canvas
    with pytest.raises(ImageError, match="exceed the limit"):
        decode_image(buffer.getvalue())


def test_missing_file_and_directory_raise_image_error(tmp_path):
    with pytest.raises(ImageError, match="cannot be read"):
        read_image(tmp_path / "absent.png")
    with pytest.raises(ImageError, match="not a regular file"):
        read_image(tmp_path)


def test_resize_and_normalise():
    large = cv2.resize(IMAGE, (160, 160))
    tensor = to_model_tensor(large)
    assert tensor.shape == (3, 112, 112) and tensor.dtype == torch.uint8
    assert torch.equal(to_model_tensor(IMAGE), torch.from_numpy(IMAGE).permute(2, 0, 1))
    values = normalize(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert values.tolist() == [[[[-1.0, 1.0]]]]

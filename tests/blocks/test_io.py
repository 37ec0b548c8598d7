import json

import numpy as np
import pytest
import tifffile

from rfseg.errors import UserError
from rfseg.blocks.io import read_image, read_mask, write_tiff


def _expected(formats_dir):
    meta = json.loads((formats_dir / "expected_metadata.json").read_text())
    return {f["file"]: f for f in meta["files"]}


@pytest.mark.parametrize(
    "name",
    [
        "test_STEM_image.dm3",
        "dmTest_float32_nonSquare_diffPixelSize.dm4",
        "128x128-TEM_search.emi",
        "Acquisition_18.emd",
        "Camera_Ceta_Imaging_Micro.emd",
    ],
)
def test_readers_match_fixture_metadata(formats_dir, name):
    exp = _expected(formats_dir)[name]
    img = read_image(formats_dir / name)
    assert img.data.dtype == np.float32
    assert img.data.shape == tuple(exp["shape"])
    assert img.raw_dtype == exp["dtype"]
    ey, ex = exp["expected_pixel_size_nm"]["y"], exp["expected_pixel_size_nm"]["x"]
    assert img.pixel_size_yx_nm == pytest.approx((ey, ex), rel=1e-6)


def test_ser_companion_and_dm4_axes(formats_dir):
    ser = read_image(formats_dir / "128x128-TEM_search_1.ser")
    assert ser.pixel_size_nm == pytest.approx(5.261214205047081, rel=1e-6)
    dm4 = read_image(formats_dir / "dmTest_float32_nonSquare_diffPixelSize.dm4")
    assert (dm4.data[3] == np.arange(128)).all()  # horizontal ramp: x is the column axis
    with pytest.raises(UserError, match="not square"):
        dm4.pixel_size_nm


def test_tiff_round_trip_keeps_pixel_size(tmp_path):
    a = np.random.default_rng(0).random((32, 48)).astype(np.float32)
    write_tiff(tmp_path / "a.tif", a, pixel_size_nm=0.02152)
    img = read_image(tmp_path / "a.tif")
    assert np.array_equal(img.data, a)
    assert img.pixel_size_nm == pytest.approx(0.02152, rel=1e-6)


def test_tiff_units_imagej_and_resolution_tags(tmp_path):
    a = np.ones((8, 8), np.uint16)
    tifffile.imwrite(tmp_path / "um.tif", a, imagej=True, resolution=(100.0, 100.0), metadata={"unit": "micron"})
    assert read_image(tmp_path / "um.tif").pixel_size_nm == pytest.approx(10.0)
    tifffile.imwrite(tmp_path / "cm.tif", a, resolution=(1e6, 1e6), resolutionunit="CENTIMETER")
    assert read_image(tmp_path / "cm.tif").pixel_size_nm == pytest.approx(10.0)
    tifffile.imwrite(tmp_path / "none.tif", a)  # tifffile's default: resolution 1, unit NONE
    img = read_image(tmp_path / "none.tif")
    assert img.pixel_size_yx_nm is None and img.pixel_size_nm is None
    assert read_image(tmp_path / "none.tif", pixel_size_nm=0.5).pixel_size_nm == 0.5


def test_real_dataset_has_no_pixel_size():
    from support import ROOT

    img = read_image(ROOT / "resources/real-tem-seg/images/frame_000.tif")
    assert img.data.shape == (512, 512) and img.pixel_size_yx_nm is None


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda p: (p.with_suffix(".jpg").write_bytes(b"x"), p.with_suffix(".jpg"))[1], "unsupported image format"),
        (lambda p: p, "file not found"),
        (lambda p: (p.write_bytes(b"II*\x00garbage"), p)[1], "cannot read the file"),
        (lambda p: (tifffile.imwrite(p, np.zeros((3, 8, 8), np.float32), photometric="minisblack"), p)[1], "stack"),
        (lambda p: (tifffile.imwrite(p, np.full((8, 8), np.nan, np.float32)), p)[1], "NaN"),
        (lambda p: (tifffile.imwrite(p, np.zeros((8, 8), np.complex64)), p)[1], "grey-scale"),
    ],
    ids=["suffix", "missing", "corrupt", "stack", "nan", "complex"],
)
def test_bad_images(tmp_path, make, needle):
    with pytest.raises(UserError, match=needle) as e:
        read_image(make(tmp_path / "bad.tif"))
    assert "\n" not in str(e.value)


def test_truncated_dm3(formats_dir, tmp_path):
    data = (formats_dir / "test_STEM_image.dm3").read_bytes()
    (tmp_path / "cut.dm3").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="cut.dm3"):
        read_image(tmp_path / "cut.dm3")


def test_masks(tmp_path):
    import imageio.v3 as iio

    m = np.zeros((8, 10), np.uint8)
    m[2:4, 3:6] = 255
    iio.imwrite(tmp_path / "m.png", m)
    assert read_mask(tmp_path / "m.png", (8, 10)).sum() == 6
    with pytest.raises(UserError, match="mask is 8x10 px but its image is 8x8 px"):
        read_mask(tmp_path / "m.png", (8, 8))


def test_headers_agree_with_the_pixels_read(formats_dir, tmp_path):
    """The plan checks a dataset from file headers alone (shape, pixel size): they must say what reading says."""
    import numpy as np

    from rfseg.blocks import io

    files = [p for p in sorted(formats_dir.glob("*")) if p.suffix.lower() in io.IMAGE_SUFFIXES]
    io.write_tiff(tmp_path / "t.tif", np.zeros((30, 40), np.float32), 0.5)
    for path in [*files, tmp_path / "t.tif"]:
        img = io.read_image(path)
        shape, px = io.read_header(path)
        assert shape == img.data.shape and np.allclose(px, img.pixel_size_yx_nm), path.name

import gzip

import nibabel as nib
import numpy as np
import pytest

from seer.errors import BadRequest, StudyNotFound, UnreadableVolume
from seer.imaging.volume import ResultFormat, VolumeCache, load_volume, write_mask


def _save(path, data, affine=None):
    nib.save(nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0]) if affine is None else affine), str(path))
    return path


def test_missing_study(tmp_path):
    with pytest.raises(StudyNotFound, match="does not exist"):
        load_volume(tmp_path / "nope.nii.gz")


@pytest.mark.parametrize(
    "payload",
    [b"not a nifti at all" * 10, gzip.compress(b"\x00" * 400), b"\x1f\x8b\x08\x00truncated"],
)
def test_corrupted_files_are_reported_as_unreadable(tmp_path, payload):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(payload)
    with pytest.raises(UnreadableVolume, match="broken.nii.gz' is not a readable NIfTI"):
        load_volume(path)


def test_truncated_real_file_is_unreadable(tmp_path):
    good = _save(tmp_path / "good.nii.gz", np.ones((20, 20, 20), np.float32))
    data = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableVolume):
        load_volume(bad)


def test_4d_and_2d_inputs_are_refused(tmp_path):
    with pytest.raises(UnreadableVolume, match="single 3D"):
        load_volume(_save(tmp_path / "four.nii.gz", np.zeros((4, 4, 4, 3), np.float32)))
    with pytest.raises(UnreadableVolume, match="not a 3D volume|single 3D"):
        load_volume(_save(tmp_path / "flat.nii.gz", np.zeros((4, 4, 1), np.float32)))


def test_unsupported_extension(tmp_path):
    path = tmp_path / "x.png"
    path.write_bytes(b"png")
    with pytest.raises(UnreadableVolume, match="unsupported file type"):
        load_volume(path)


def test_mask_is_written_on_the_input_grid(tmp_path):
    affine = np.array([[-2.0, 0, 0, 10], [0, -2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])  # LPS storage
    volume = load_volume(_save(tmp_path / "lps.nii.gz", np.random.rand(10, 12, 8).astype(np.float32), affine))
    mask = np.zeros(volume.shape, np.uint8)
    mask[2:4, 3:5, 1:2] = 7
    out = write_mask(mask, volume, tmp_path / "mask.nii.gz")
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, affine)
    np.testing.assert_array_equal(np.asanyarray(back.dataobj), mask)
    assert not list(tmp_path.glob("*.tmp-*"))


def test_a_mask_of_a_study_with_only_an_sform_lies_where_itk_reads_the_study(tmp_path):
    """Colin27 carries an sform (code 4) and no qform (code 0): the mask must not turn the empty qform into an
    authoritative one (ITK, and so Slicer, would read the mask at origin 0)."""
    import SimpleITK as sitk

    affine = np.array([[1.0, 0, 0, -90], [0, 1.0, 0, -125], [0, 0, 1.0, -71], [0, 0, 0, 1]])
    image = nib.Nifti1Image(np.random.rand(9, 10, 11).astype(np.float32), affine)
    image.header.set_sform(affine, code=4)
    image.header.set_qform(np.diag([1.0, -1, -1, 1]), code=0)  # as Colin27: an unset qform of zeros
    source = tmp_path / "sform_only.nii.gz"
    nib.save(image, str(source))
    volume = load_volume(source)
    out = write_mask(np.ones(volume.shape, np.uint8), volume, tmp_path / "mask.nii.gz")
    study, mask = sitk.ReadImage(str(source)), sitk.ReadImage(out)
    np.testing.assert_allclose(mask.GetOrigin(), study.GetOrigin())
    np.testing.assert_allclose(mask.GetDirection(), study.GetDirection())
    np.testing.assert_allclose(nib.load(out).affine, affine)


def test_sitk_view_shares_physical_space(tmp_path):
    affine = np.array([[-2.0, 0, 0, 10], [0, 2.0, 0, 20], [0, 0, 3.0, -5], [0, 0, 0, 1]])
    volume = load_volume(_save(tmp_path / "v.nii.gz", np.zeros((5, 6, 7), np.float32), affine))
    image = volume.to_sitk()
    ras = affine @ np.array([1, 2, 3, 1.0])
    lps = image.TransformIndexToPhysicalPoint([1, 2, 3])
    np.testing.assert_allclose(lps, [-ras[0], -ras[1], ras[2]])


def test_content_key_ignores_file_encoding(tmp_path):
    data = np.random.rand(6, 6, 6).astype(np.float32)
    a = load_volume(_save(tmp_path / "a.nii.gz", data))
    b = load_volume(_save(tmp_path / "b.nii", data))
    assert a.key == b.key


def test_cache_reloads_a_changed_file(tmp_path):
    cache = VolumeCache(max_mb=1)
    path = _save(tmp_path / "v.nii.gz", np.zeros((4, 4, 4), np.float32))
    first = cache.get(path)
    assert cache.get(path) is first
    _save(path, np.ones((4, 4, 4), np.float32))
    assert cache.get(path).array.max() == 1.0


def test_result_formats_parse_check_and_write(tmp_path):
    """OHIF's params parse; a value the dtype cannot hold is refused, never wrapped into another label's value;
    NRRD comes out raw or gzip as asked, atomically."""
    import SimpleITK as sitk

    ohif = ResultFormat.from_params({"result_extension": "nrrd", "result_dtype": "uint8", "result_compress": "false"})
    assert ohif == ResultFormat(".nrrd", "uint8", False) and not ohif.is_default
    assert ResultFormat.from_params({}).is_default
    with pytest.raises(BadRequest, match="result_dtype uint8 cannot hold"):
        ohif.check_value(300, "Hippocampus_L")
    ohif.check_value(255, "x")
    ResultFormat.from_params({}).check_value(300, "x")  # unset dtype: uint16 is chosen when needed
    volume = load_volume(_save(tmp_path / "v.nii.gz", np.random.rand(10, 12, 8).astype(np.float32)))
    mask = np.zeros(volume.shape, bool)
    mask[2:5, 3:6, 1:4] = True
    for fmt, name in ((ohif, "raw.nrrd"), (ResultFormat(".nrrd", None, True), "gz.nrrd")):
        out = fmt.write(mask, volume, tmp_path / name, 300 if fmt.dtype is None else 7)
        with open(out, "rb") as fp:
            head = fp.read(300)
        assert (b"encoding: raw" in head) == (not fmt.compress)
        back = sitk.GetArrayFromImage(sitk.ReadImage(out)).transpose(2, 1, 0)
        np.testing.assert_array_equal(back, mask * (300 if fmt.dtype is None else 7))
    assert not list(tmp_path.glob(".tmp-*"))


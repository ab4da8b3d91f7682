"""What reaches the PACS and the datastore from a client: the DICOMweb proxy's path grammar, the checks of an
uploaded label file (format, grid, values) and the one rule for a saved label's names."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from seer.errors import SeerError
from seer.imaging.label_file import check_label_file, label_suffix, label_values, upload_limit_bytes
from seer.loop.saved_labels import name_label_values
from seer.pacs.dicomweb_paths import check_proxy_path, is_uid
from seer.reasoning.targets import LabelTable

STUDY, SERIES, SOP = "1.2.840.1", "1.2.840.1.2", "1.2.840.1.2.3"
INSTANCE = f"studies/{STUDY}/series/{SERIES}/instances/{SOP}"


@pytest.mark.parametrize("path", [
    "studies", f"studies/{STUDY}", f"studies/{STUDY}/metadata", f"studies/{STUDY}/series",
    f"studies/{STUDY}/series/{SERIES}", f"studies/{STUDY}/series/{SERIES}/metadata",
    f"studies/{STUDY}/series/{SERIES}/rendered", f"studies/{STUDY}/series/{SERIES}/instances", INSTANCE,
    f"{INSTANCE}/metadata", f"{INSTANCE}/frames/1", f"{INSTANCE}/frames/1,2,3", f"{INSTANCE}/frames/2/rendered",
    f"{INSTANCE}/rendered", f"{INSTANCE}/thumbnail", f"{INSTANCE}/bulk/7fe00010", f"{INSTANCE}/bulkdata/0028,0010",
    "series", "instances", f"studies/{STUDY}/instances", f"{INSTANCE}/",
])
def test_dicomweb_resources_pass_the_proxy(path):
    checked = check_proxy_path(path)
    assert checked.path == path.rstrip("/")


@pytest.mark.parametrize("path", [
    "system", "patients", "instances/abc", "tools/find", "../system", "studies/../system", f"{INSTANCE}/../../..",
    "studies/%2e%2e/system", "studies/%252e%252e/system", "studies\\..\\system", "studies/./1.2", "studies//1.2",
    f"studies/{STUDY}/series/{SERIES}/frames/1", f"{INSTANCE}/frames/0", f"{INSTANCE}/frames/1/file", f"{INSTANCE}/file",
    "studies/1..2", "studies/.1.2", "studies/1.2.", "studies/" + "1" * 65, "studies/1.2\x00", "studies/1.2\n",
    f"{INSTANCE}/bulk/../../system", "", "/", "studies/1.2/series/3.4/series",
])
def test_anything_else_is_refused_with_a_sentence_before_a_url_is_built(path):
    with pytest.raises(SeerError) as refused:
        check_proxy_path(path)
    assert refused.value.status == 400 and "DICOMweb resources only" in refused.value.message


def test_post_is_stow_only():
    assert check_proxy_path("studies", "POST").stow and check_proxy_path(f"studies/{STUDY}", "POST").stow
    for path in (f"studies/{STUDY}/series", INSTANCE, "series", "instances"):
        with pytest.raises(SeerError) as refused:
            check_proxy_path(path, "POST")
        assert refused.value.status == 405 and "STOW-RS" in refused.value.message
    with pytest.raises(SeerError):
        check_proxy_path("studies", "DELETE")


def test_uids():
    assert is_uid("1.2.840.10008.1.2.1") and is_uid("0") and is_uid("1" * 64)
    for text in ("", "1" * 65, "1..2", ".1", "1.", "a.1", "/etc/passwd", "../1", "1.2/3", 12):
        assert not is_uid(text)


@pytest.fixture
def study(tmp_path):
    image = sitk.Image(20, 30, 10, sitk.sitkInt16)
    image.SetSpacing((1.5, 1.5, 3.0))
    image.SetOrigin((-10.0, 5.0, 2.0))
    path = tmp_path / "study.nii.gz"
    sitk.WriteImage(image, str(path))
    return image, str(path)


def _label(image, array, path):
    label = sitk.GetImageFromArray(array)
    label.CopyInformation(image)
    sitk.WriteImage(label, str(path))
    return str(path)


def test_a_label_on_the_grid_gives_its_values(study, tmp_path):
    image, image_path = study
    array = np.zeros((10, 30, 20), np.uint16)
    array[2:5, 3:9, 4:8] = 3
    array[0, 0, 0] = 65535
    checked = check_label_file(_label(image, array, tmp_path / "ok.nii.gz"), image_path)
    assert checked.values == (3, 65535) and checked.size == (20, 30, 10)
    as_float = check_label_file(_label(image, array[..., :].astype(np.float32), tmp_path / "f.nrrd"), image_path)
    assert as_float.values == (3, 65535)


def test_every_broken_label_is_refused_with_a_sentence(study, tmp_path):
    image, image_path = study
    good = _label(image, np.ones((10, 30, 20), np.uint8), tmp_path / "good.nii.gz")
    raw = Path(good).read_bytes()
    cases = {
        "truncated.nii.gz": (raw[: len(raw) // 2], "truncated or damaged"),
        "hello.nii.gz": (b"hello world", "not a readable image"),
        "bomb.nii.gz": (gzip.compress(bytes(20 << 20)), "decompresses to more than"),
        "huge.nrrd": (b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 10000 10000 10000\nencoding: raw\n\n",
                      "10000x10000x10000 voxels but its study is 20x30x10"),
        "flat.nrrd": (b"NRRD0004\ntype: uint8\ndimension: 2\nsizes: 20 30\nencoding: raw\n\n" + bytes(600),
                      "2 dimensions"),
        "short.bin": (bytes(600), "600 bytes; its study has 6000 voxels"),
    }
    plain = tmp_path / "plain.nii"
    sitk.WriteImage(sitk.ReadImage(good), str(plain), False)
    cases["truncated.nii"] = (plain.read_bytes()[:-500], "truncated")
    cases["gzip-of-truncated.nii.gz"] = (gzip.compress(plain.read_bytes()[:-500]), "truncated")
    for name, (data, expected) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(SeerError) as refused:
            check_label_file(str(tmp_path / name), image_path)
        assert expected in refused.value.message and str(tmp_path) not in refused.value.message, name
    other = sitk.Image(20, 30, 10, sitk.sitkUInt8)
    other.SetSpacing((1.0, 1.0, 1.0))
    sitk.WriteImage(other, str(tmp_path / "grid.nii.gz"))
    with pytest.raises(SeerError, match="spacing"):
        check_label_file(str(tmp_path / "grid.nii.gz"), image_path)
    for array, expected in ((np.full((10, 30, 20), 70000, np.uint32), "from 70000 to 70000"),
                            (np.full((10, 30, 20), -1, np.int16), "from -1 to -1"),
                            (np.full((10, 30, 20), 1.5, np.float32), "fractional")):
        with pytest.raises(SeerError, match=expected):
            check_label_file(_label(image, array, tmp_path / "values.nii.gz"), image_path)


def test_a_raw_bin_label_becomes_nifti_on_the_study_grid(study, tmp_path):
    image, image_path = study
    array = np.zeros((10, 30, 20), np.uint8)
    array[1, 2, 3] = 4
    (tmp_path / "label.bin").write_bytes(array.tobytes())
    checked = check_label_file(str(tmp_path / "label.bin"), image_path)
    assert checked.values == (4,) and checked.path.endswith(".nii.gz")
    written = sitk.ReadImage(checked.path)
    assert written.GetSpacing() == image.GetSpacing() and written.GetOrigin() == image.GetOrigin()
    assert sitk.GetArrayFromImage(written)[1, 2, 3] == 4


def test_suffixes_and_upload_limit(study):
    assert label_suffix("a.nii.gz") == ".nii.gz" and label_suffix("x.seg.nrrd") == ".nrrd"
    assert label_suffix(None) == ".nii.gz" and label_suffix("../../a.nii") == ".nii"
    for name in ("seg.dcm", "label.png", "label"):
        with pytest.raises(SeerError, match="not a label format"):
            label_suffix(name)
    assert upload_limit_bytes(study[1]) == 6000 * 8 + (1 << 20)


def test_label_values_counts_in_chunks_without_missing_any():
    array = np.zeros(10_000_000, np.uint16)
    array[-1], array[5_000_000] = 9, 2
    assert label_values(array) == (2, 9) and label_values(np.zeros(0)) == ()


def test_one_rule_for_a_saved_labels_names():
    table = LabelTable({"1": "liver", "2": "kidney_left", "3": {"name": "Parotid_R", "aliases": ["right parotid"]}})
    # the client's own names first; the table names what the client left unnamed
    named = name_label_values((1, 2), {1: "Liver"}, table)
    assert named.names == {1: "Liver", 2: "kidney_left"} and named.from_table == (2,)
    assert named.as_label_names() == {"Liver": 1, "kidney_left": 2}
    assert name_label_values((2, 3), {2: "left kidney", 3: "right parotid"}, table).from_table == ()
    assert name_label_values((7,), {7: "tumour"}, table).names == {7: "tumour"}  # not one of the table's ids
    # a label that names every value is read by its own names (a team's own map), whatever the table says
    assert name_label_values((1, 2), {1: "spleen", 2: "liver"}, table).names == {1: "spleen", 2: "liver"}
    # one that leaves values to the table holds this server's ids: a name contradicting the table's is refused
    for client in ({1: "spleen"}, {2: "Kidney_R"}, {3: "Parotid_L"}):
        value = next(iter(client))
        with pytest.raises(SeerError) as refused:
            name_label_values((value, 1 if value != 1 else 2), client, table)
        assert f"'{client[value]}'" in refused.value.message and f"'{table.by_id[value].name}'" in refused.value.message
    # a value nobody names: refused for a final label, left unnamed otherwise
    with pytest.raises(SeerError, match="999"):
        name_label_values((1, 999), {}, table)
    assert name_label_values((1, 999), {}, table, require_all=False).names == {1: "liver"}

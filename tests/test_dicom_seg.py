"""seer.pacs.dicom_seg: SNOMED CT coding of targets (the shipped table checked against pydicom's concept dictionary) and
DICOM SEG written over, and read back onto, the real JPEG 2000 CT series."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seer.errors import BadRequest
from seer.pacs.dicom_seg import _TABLE, read_seg, segment_coding, write_seg

from conftest import SHARED_DATA, missing_fixture

SERIES = SHARED_DATA / "dicom-ct-series"


def test_every_code_in_the_table_is_the_snomed_concept_pydicom_lists():
    from pydicom.sr._concepts_dict import concepts

    sct: dict[str, set[str]] = {}  # one code can be listed under several meanings ("Kidney", "Kidney structure")
    for entries in concepts["SCT"].values():
        for code, (meaning, _) in entries.items():
            sct.setdefault(code, set()).add(meaning)
    table = json.loads(_TABLE.read_text())
    coded = [entry["type"] for entry in table["structures"].values()]
    coded += list(table["categories"].values()) + list(table["laterality"].values())
    for concept in coded:
        assert concept["scheme"] == "SCT"
        assert concept["meaning"] in sct.get(concept["value"], set()), concept
    for entry in table["structures"].values():
        assert entry["category"] in table["categories"]


@pytest.mark.parametrize("name, meaning, side, in_table", [
    ("kidney_left", "Kidney", "Left", True),
    ("Hippocampus_R", "Hippocampus", "Right", True),
    ("vertebrae_L3", "Vertebra", None, True),
    ("rib_right_11", "Rib", "Right", True),
    ("Cerebelum_Crus1_L", "Cerebellum", "Left", True),
    ("kidney_cyst_left", "Cyst", "Left", True),
    ("liver", "Liver", None, True),
    ("Frontal_Sup_L", "Anatomical Structure", "Left", False),  # not in the table: generic type, own label
])
def test_segment_coding(name, meaning, side, in_table):
    coding = segment_coding(name)
    assert coding.label == name
    assert coding.type.meaning == meaning
    assert (coding.laterality.meaning if coding.laterality else None) == side
    assert coding.in_table is in_table
    if name == "kidney_cyst_left":
        assert coding.category.meaning == "Morphologically Abnormal Structure"


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """The CT series as files, and its grid as a NIfTI (what the DICOMweb datastore converts it to)."""
    import SimpleITK as sitk

    if not list(SERIES.glob("*.dcm")):
        missing_fixture(f"the DICOM CT series is not available: {SERIES} is absent")
    folder = tmp_path_factory.mktemp("series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(SERIES)))
    image = reader.Execute()
    sitk.WriteImage(image, str(folder / "image.nii.gz"))
    return folder / "image.nii.gz", image


def _label(series, tmp_path, boxes: dict[int, tuple]) -> str:
    import SimpleITK as sitk

    _, image = series
    values = np.zeros(sitk.GetArrayViewFromImage(image).shape, np.uint16)
    for value, box in boxes.items():
        values[box] = value
    label = sitk.GetImageFromArray(values)
    label.CopyInformation(image)
    path = str(tmp_path / "label.nii.gz")
    sitk.WriteImage(label, path)
    return path


def test_seg_round_trip_keeps_voxels_names_and_codes(series, tmp_path):
    import pydicom
    import SimpleITK as sitk

    reference, _ = series
    label = _label(series, tmp_path, {162: np.s_[3:12, 200:300, 150:260], 9: np.s_[8:15, 100:150, 300:360]})
    written = write_seg(label, SERIES, tmp_path / "seg.dcm", {162: "liver", 9: "kidney_left"},
                        content_description="the liver pls")
    assert [(s["value"], s["label"], s["type_code"]) for s in written["segments"]] == [
        (9, "kidney_left", "64033007"), (162, "liver", "10200004")]
    ds = pydicom.dcmread(str(tmp_path / "seg.dcm"))
    assert ds.ContentDescription == "the liver pls"
    kidney = ds.SegmentSequence[0]
    assert kidney.SegmentedPropertyTypeModifierCodeSequence[0].CodeMeaning == "Left"
    names = read_seg(tmp_path / "seg.dcm", SERIES, reference, tmp_path / "back.nii.gz")
    assert names == {"kidney_left": 1, "liver": 2}
    original = sitk.GetArrayFromImage(sitk.ReadImage(label))
    back = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "back.nii.gz")))
    assert np.array_equal(back == 2, original == 162) and np.array_equal(back == 1, original == 9)


def test_seg_refuses_an_unnamed_value_and_an_empty_label(series, tmp_path):
    label = _label(series, tmp_path, {5: np.s_[3:6, 10:20, 10:20], 6: np.s_[7:9, 10:20, 10:20]})
    with pytest.raises(BadRequest, match=r"value\(s\) \[6\]"):
        write_seg(label, SERIES, tmp_path / "seg.dcm", {5: "spleen"})
    assert not (tmp_path / "seg.dcm").exists()
    empty = _label(series, tmp_path, {})
    with pytest.raises(BadRequest, match="empty"):
        write_seg(empty, SERIES, tmp_path / "seg.dcm", {5: "spleen"})


def test_read_seg_refuses_a_file_that_is_not_a_seg(series, tmp_path):
    reference, _ = series
    with pytest.raises(ValueError, match="not a DICOM SEG"):
        read_seg(sorted(SERIES.glob("*.dcm"))[0], SERIES, reference, tmp_path / "out.nii.gz")

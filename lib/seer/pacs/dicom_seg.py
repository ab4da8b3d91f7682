"""DICOM SEG for SEER targets: segments coded from the resolved target, never from what a client sends.

- `segment_coding(name)`: a label-table name ("kidney_left", "Hippocampus_L", "vertebrae_L3") -> SNOMED CT category,
  type and laterality modifier, from the table shipped in `seer/data/segment_codes.json` (codes as listed in
  pydicom's DICOM concept dictionary). A structure not in the table is typed with the generic "Anatomical
  Structure" concept and keeps its own name as the segment label.
- `write_seg(label, series_dir, output, names)`: a label map (NIfTI/NRRD on any grid that covers the series) ->
  one binary DICOM Segmentation over the source series, written with highdicom; segment numbers 1..N in value
  order, each segment's label the target's name.
- `read_seg(seg_file, series_dir, reference, output)`: a DICOM SEG over a cached series -> a label map on the
  reference image's grid (values = segment numbers) and {segment label: value}.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

import seer
from seer.errors import BadRequest

_TABLE = resources.files("seer").joinpath("data/segment_codes.json")
_SIDE_TOKENS = {"left": "left", "l": "left", "lt": "left", "right": "right", "r": "right", "rt": "right"}
_LEVEL = re.compile(r"^(?:[ctls]\d{1,2}|\d{1,2}|crus\d|\d+b?)$")  # vertebra/rib levels, AAL cerebellar lobules
GENERIC_TYPE = {"value": "91723000", "scheme": "SCT", "meaning": "Anatomical Structure"}


@dataclass(frozen=True)
class Concept:
    value: str
    scheme: str
    meaning: str

    def coded(self):
        from highdicom.sr import CodedConcept

        return CodedConcept(self.value, self.scheme, self.meaning)


@dataclass(frozen=True)
class SegmentCoding:
    """How one target is written into a SEG segment."""

    label: str  # SegmentLabel: the target's name as the label table has it
    category: Concept
    type: Concept
    laterality: Concept | None
    in_table: bool  # False: typed with the generic "Anatomical Structure"

    def describe(self) -> str:
        side = f", {self.laterality.meaning.lower()}" if self.laterality else ""
        return f"{self.type.meaning}{side} (SCT {self.type.value})"


@lru_cache(maxsize=1)
def _table() -> dict:
    with _TABLE.open(encoding="utf-8") as f:
        return json.load(f)


def _structure_and_side(name: str) -> tuple[list[str], str | None]:
    words = [w for w in re.split(r"[\s_\-]+", name.strip().lower()) if w]
    side = None
    kept = []
    for word in words:
        if word in _SIDE_TOKENS:
            side = side or _SIDE_TOKENS[word]
        elif not _LEVEL.match(word):
            kept.append(word)
    return kept, side


def segment_coding(name: str) -> SegmentCoding:
    """SNOMED CT coding of a label-table name: the longest leading run of its words found in the table."""
    table = _table()
    words, side = _structure_and_side(name)
    structures = table["structures"]
    for end in range(len(words), 0, -1):
        entry = structures.get(" ".join(words[:end]))
        if entry is not None:
            category = Concept(**table["categories"][entry["category"]])
            laterality = Concept(**table["laterality"][side]) if side else None
            return SegmentCoding(name, category, Concept(**entry["type"]), laterality, True)
    category = Concept(**table["categories"]["AnatomicalStructure"])
    laterality = Concept(**table["laterality"][side]) if side else None
    return SegmentCoding(name, category, Concept(**GENERIC_TYPE), laterality, False)


def _series_files(series_dir: str | os.PathLike) -> list[str]:
    """The series' files in slice order (the order SimpleITK stacks them)."""
    import SimpleITK as sitk

    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(series_dir)))
    if not files:
        raise BadRequest(f"No DICOM image series in '{series_dir}'.")
    return files


def _headers(files: list[str]) -> list:
    """The files' DICOM headers (pixel data not read), in `files` order."""
    import pydicom

    return [pydicom.dcmread(f, stop_before_pixels=True) for f in files]


def _series_grid(headers: list):
    """An empty SimpleITK image with the series geometry (no pixel decoding: JPEG 2000 needs no codec here)."""
    import SimpleITK as sitk

    first = headers[0]
    positions = [np.array(h.ImagePositionPatient, float) for h in headers]
    row, col = (np.array(first.ImageOrientationPatient[:3], float), np.array(first.ImageOrientationPatient[3:], float))
    normal = np.cross(row, col)
    spacing_z = float(np.median(np.diff([p @ normal for p in positions]))) if len(headers) > 1 else float(
        getattr(first, "SliceThickness", 1.0) or 1.0)
    grid = sitk.Image(int(first.Columns), int(first.Rows), len(headers), sitk.sitkUInt8)
    pixel = [float(v) for v in first.PixelSpacing]  # row spacing (between rows), column spacing
    grid.SetSpacing((pixel[1], pixel[0], abs(spacing_z) or 1.0))
    grid.SetOrigin(tuple(positions[0]))
    direction = np.stack([row, col, normal if spacing_z >= 0 else -normal], axis=1)
    grid.SetDirection(tuple(direction.ravel()))
    return grid


def _atomic_write(write, output: Path, suffix: str) -> Path:
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=output.parent, suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return output


def check_segments(values: list[int], names: dict[int, str]) -> None:
    """BadRequest unless the label holds a segment and `names` names every value (a segment is never unnamed)."""
    if not values:
        raise BadRequest("The label is empty: there is no segment to write as a DICOM SEG.")
    unnamed = [v for v in values if v not in names]
    if unnamed:
        raise BadRequest(f"The label holds value(s) {unnamed[:5]} that name no target of this server (GET /info/ "
                         "lists the labels and their ids); a DICOM SEG segment cannot be left unnamed. Send "
                         "label_names {name: value} for them.")


def write_seg(
    label: str | os.PathLike,
    series_dir: str | os.PathLike,
    output: str | os.PathLike,
    names: dict[int, str],
    series_description: str = "SEER Label",
    content_description: str = "",
) -> dict:
    """Write `label` (values = keys of `names`) as a binary DICOM SEG over `series_dir`; returns
    {"file", "series_uid", "segments": [{number, value, label, type, category, laterality}]}.

    Values of the label map that `names` does not hold are refused (BadRequest): a segment is never unnamed."""
    import highdicom as hd
    import SimpleITK as sitk
    from pydicom.sr.codedict import codes

    files = _series_files(series_dir)
    sources = _headers(files)
    grid = _series_grid(sources)
    mask = sitk.ReadImage(str(label))
    mask = sitk.Resample(mask, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt32)
    values_zyx = sitk.GetArrayFromImage(mask)  # (slices, rows, columns), slices in `files` order
    present = [int(v) for v in np.unique(values_zyx) if v != 0]
    check_segments(present, names)
    numbering = np.zeros(max(present) + 1, np.uint16)
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(
        name="SEER Label", family=codes.cid7162.ArtificialIntelligence, version=seer.__version__)
    segments = []
    for number, value in enumerate(present, start=1):
        numbering[value] = number
        coding = segment_coding(names[value])
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=coding.label[:64],
            segmented_property_category=coding.category.coded(),
            segmented_property_type=coding.type.coded(),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=algorithm,
        )
        if coding.laterality is not None:
            description.SegmentedPropertyTypeModifierCodeSequence = [coding.laterality.coded()]
        descriptions.append(description)
        segments.append({"number": number, "value": value, "label": coding.label, "type": coding.type.meaning,
                         "type_code": coding.type.value, "category": coding.category.meaning,
                         "laterality": coding.laterality.meaning if coding.laterality else None})
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=numbering[values_zyx],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=300,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="SEER Label",
        manufacturer_model_name="SEER Label",
        software_versions=seer.__version__,
        device_serial_number="0",
        content_description=(content_description or "SEER Label segmentation")[:64],
        content_label="SEER",
    )
    seg.SeriesDescription = series_description[:64]
    _atomic_write(lambda tmp: seg.save_as(tmp), Path(output), ".dcm")
    return {"file": str(output), "series_uid": str(seg.SeriesInstanceUID), "segments": segments}


def read_seg(
    seg_file: str | os.PathLike,
    series_dir: str | os.PathLike,
    reference: str | os.PathLike,
    output: str | os.PathLike,
) -> dict[str, int]:
    """Read a DICOM SEG over the series cached in `series_dir` into a uint16 label map on `reference`'s grid
    (values = segment numbers), written atomically to `output`; returns {segment label: value}.

    Overlapping segments keep the higher segment number. Raises ValueError for a file that is not a SEG or
    references none of the series' instances."""
    import highdicom as hd
    import pydicom
    import SimpleITK as sitk

    dataset = pydicom.dcmread(str(seg_file))
    if getattr(dataset, "Modality", "") != "SEG":
        raise ValueError(f"{seg_file} is not a DICOM SEG (modality {getattr(dataset, 'Modality', 'none')}).")
    seg = hd.seg.Segmentation.from_dataset(dataset)
    headers = _headers(_series_files(series_dir))
    uids = [str(h.SOPInstanceUID) for h in headers]
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    wanted = [u for u in uids if u in referenced]
    if not wanted:
        raise ValueError(f"{seg_file} references none of the {len(uids)} instances of the series.")
    numbers = seg.get_segment_numbers()
    pixels = seg.get_pixels_by_source_instance(wanted, segment_numbers=numbers, combine_segments=False,
                                               assert_missing_frames_are_empty=False)  # (n, rows, cols, segments)
    volume = np.zeros((len(uids),) + pixels.shape[1:3], np.uint16)
    index = {u: i for i, u in enumerate(uids)}
    for k, uid in enumerate(wanted):
        for s, number in enumerate(numbers):
            volume[index[uid]][pixels[k, :, :, s] > 0] = number
    image = sitk.GetImageFromArray(volume)
    image.CopyInformation(_series_grid(headers))
    reference_image = sitk.ReadImage(str(reference))
    image = sitk.Resample(image, reference_image, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    _atomic_write(lambda tmp: sitk.WriteImage(image, tmp, True), Path(output), ".nii.gz")
    return {seg.get_segment_description(n).segment_label: int(n) for n in numbers}

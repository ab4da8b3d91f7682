"""A label file a client uploads, checked before anything is stored.

A label is stored only when it is readable as a 3D image, lies on its study's grid (size, spacing, origin and
direction), and holds whole values from 0 to 65535 (DICOM SEG segment numbers are 16-bit). The header is read
first and compared with the study's, so a header that declares 10^12 voxels is refused before any voxel is read;
the voxels read are then bounded by the study's size. MONAI Label's raw `.bin` labels (uint8, x fastest) must
have exactly one byte per voxel of the study and are written as NIfTI on its grid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seer.errors import BadRequest

SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".bin")  # ".seg.nrrd" ends in ".nrrd"
MAX_VALUE = 65535
HEADER_SLACK_BYTES = 1 << 20  # an NRRD or NIfTI header and gzip overhead over the voxels themselves
_CHUNK = 1 << 22  # voxels per bincount pass: the values are counted without an int64 copy of the whole label


@dataclass(frozen=True)
class CheckedLabel:
    """`path`: the label as a readable image file (the upload, or NIfTI written from a `.bin`); `values`: the
    non-zero values it holds, ascending; `size`: its grid (x, y, z) in voxels."""

    path: str
    values: tuple[int, ...]
    size: tuple[int, ...]


def label_suffix(filename: str | None) -> str:
    """The accepted suffix of an uploaded file name (".nii.gz" when it has none); BadRequest for other formats."""
    name = Path(filename or "label.nii.gz").name.lower()
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise BadRequest(f"'{Path(filename or '').name[:80]}' is not a label format this server reads: send NIfTI "
                     "(.nii.gz, .nii), NRRD (.nrrd, .seg.nrrd), MetaImage (.mha) or MONAI Label's raw .bin. A DICOM "
                     "SEG is read from the PACS, not uploaded here.")


def upload_limit_bytes(image_path: str) -> int:
    """The most bytes a label of this study can take: 8 bytes a voxel (float64, uncompressed) plus a header."""
    return _byte_limit(_header(image_path, "the study's image"))


def check_label_file(label_path: str, image_path: str) -> CheckedLabel:
    """The checked label at `label_path` for the study image at `image_path`; BadRequest (422) with a sentence
    when it cannot be read, is not on the study's grid or holds values that are not whole numbers 0..65535."""
    study = _header(image_path, "the study's image")
    if label_path.lower().endswith(".bin"):
        return _from_raw(label_path, study)
    unpacked = _check_gzip(label_path, _byte_limit(study))
    label = _header(label_path, "the label")
    _same_grid(label, study)
    if label_path.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_length(label_path, unpacked)
    import SimpleITK as sitk

    try:
        image = label.Execute()
    except RuntimeError as exc:
        raise BadRequest(f"The label cannot be read: its voxels are missing or damaged ({_first_line(exc, label_path)})."
                         ) from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise BadRequest("The label has several components per voxel; send one value per voxel (0 = background).")
    values = label_values(sitk.GetArrayViewFromImage(image))
    return CheckedLabel(label_path, values, tuple(image.GetSize()))


def label_values(array: np.ndarray) -> tuple[int, ...]:
    """The non-zero values of a label array, ascending; BadRequest for values that are negative, above 65535 or
    not whole."""
    if array.size == 0:
        return ()
    low, high = array.min(), array.max()
    if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > MAX_VALUE:
        raise BadRequest(f"The label holds values from {low} to {high}; label values are whole numbers from 0 "
                         f"(background) to {MAX_VALUE}.")
    flat = array.reshape(-1)
    counts = np.zeros(int(high) + 1, dtype=np.int64)
    for start in range(0, flat.size, _CHUNK):
        chunk = flat[start:start + _CHUNK]
        if chunk.dtype.kind == "f" and not np.array_equal(chunk, np.floor(chunk)):
            raise BadRequest("The label holds fractional values; label values are whole numbers (0 = "
                             "background), one per structure.")
        counts += np.bincount(chunk.astype(np.intp, copy=False), minlength=counts.size)
    return tuple(int(v) for v in np.flatnonzero(counts) if v != 0)


def _header(path: str, what: str):
    """A SimpleITK reader with the header of `path` read (no voxels); BadRequest when it is not an image."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise BadRequest(f"{what[0].upper()}{what[1:]} is not a readable image ({_first_line(exc, path)}); send NIfTI, "
                         "NRRD or MetaImage.") from None
    if reader.GetDimension() != 3:
        raise BadRequest(f"{what[0].upper()}{what[1:]} has {reader.GetDimension()} dimensions; a label is one 3D "
                         "volume on its study's grid.")
    return reader


def _check_gzip(path: str, limit: int) -> int | None:
    """A gzip-compressed file (.nii.gz) must decompress completely (ITK reads a truncated stream without a word)
    and to at most `limit` bytes (a gzip bomb stops at the limit, unread beyond it). Returns the decompressed
    length, None for a file that is not gzip."""
    import gzip
    import zlib

    with open(path, "rb") as fp:
        if fp.read(2) != b"\x1f\x8b":
            return None
    total = 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 22):
                total += len(chunk)
                if total > limit:
                    raise BadRequest(f"The label decompresses to more than {limit >> 20} MiB, more than any label of "
                                     "its study can hold (8 bytes a voxel plus a header).")
    except (EOFError, OSError, zlib.error) as exc:
        raise BadRequest(f"The label's gzip stream is truncated or damaged ({type(exc).__name__}): send the whole "
                         "file again.") from None
    return total


def _check_nifti_length(path: str, unpacked: int | None) -> None:
    """A NIfTI file must hold every voxel its header declares (ITK zero-fills a truncated .nii without a word)."""
    import nibabel as nib

    header = nib.load(path).header
    needed = int(header.get_data_offset()) + _voxel_count(header.get_data_shape()) * header.get_data_dtype().itemsize
    length = unpacked if unpacked is not None else os.path.getsize(path)
    if length < needed:
        raise BadRequest(f"The label is truncated: its header declares {needed} bytes of voxels and header, the file "
                         f"holds {length}. Send the whole file again.")


def _voxel_count(shape) -> int:
    return int(np.prod([int(n) for n in shape], dtype=np.float64))


def _byte_limit(study) -> int:
    """The most bytes a label of the study (a header reader) can take: 8 a voxel (float64, uncompressed) and a
    header."""
    return _voxel_count(study.GetSize()) * 8 + HEADER_SLACK_BYTES


def _same_grid(label, study) -> None:
    """BadRequest unless the label's size, spacing, origin and direction are the study's (within 1e-3 of a voxel
    and 1e-3 in direction cosines)."""
    if tuple(label.GetSize()) != tuple(study.GetSize()):
        raise BadRequest(f"The label is {'x'.join(map(str, label.GetSize()))} voxels but its study is "
                         f"{'x'.join(map(str, study.GetSize()))}: a label must lie on its study's grid (save it "
                         "from a segmentation of this study).")
    spacing = np.asarray(study.GetSpacing())
    checks = (("spacing", label.GetSpacing(), spacing, 1e-3 * spacing),
              ("origin", label.GetOrigin(), study.GetOrigin(), 1e-3 * spacing.max()),
              ("direction", label.GetDirection(), study.GetDirection(), 1e-3))
    for what, mine, theirs, tolerance in checks:
        if not np.all(np.abs(np.asarray(mine) - np.asarray(theirs)) <= tolerance):
            raise BadRequest(f"The label's {what} {_fmt(mine)} differs from its study's {_fmt(theirs)}: a label must "
                             "lie on its study's grid (save it from a segmentation of this study).")


def _from_raw(path: str, study) -> CheckedLabel:
    """A `.bin` upload: one uint8 a voxel in the study's order (x fastest), written as NIfTI on its grid."""
    import SimpleITK as sitk

    size = tuple(int(n) for n in study.GetSize())
    expected = _voxel_count(study.GetSize())
    actual = os.path.getsize(path)
    if actual != expected:
        raise BadRequest(f"The raw .bin label has {actual} bytes; its study has {expected} voxels, one byte each.")
    array = np.fromfile(path, dtype=np.uint8).reshape(size[::-1])
    values = label_values(array)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(study.GetSpacing())
    image.SetOrigin(study.GetOrigin())
    image.SetDirection(study.GetDirection())
    out = path[: -len(".bin")] + ".nii.gz"
    sitk.WriteImage(image, out, True)
    return CheckedLabel(out, values, size)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values) + ")"


def _first_line(exc: BaseException, path: str) -> str:
    """The reader's own sentence, without the server's file path."""
    text = str(exc).replace(f'"{path}"', "the file").replace(str(path), "the file")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = next((line for line in lines if "Exception" not in line and "itk::" not in line), lines[-1] if lines else "")
    return (text or type(exc).__name__)[:160]

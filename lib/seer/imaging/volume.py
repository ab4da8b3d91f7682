"""Reading studies: NIfTI through nibabel (other ITK formats through SimpleITK), with clear errors and a cache.

A `Volume` keeps the array exactly as nibabel loads it (index order i, j, k; no reorientation) and its RAS affine;
masks are written back on this grid. `key` is a content hash, so caches survive renames and restarts.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import threading
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from seer.cache import BoundedCache
from seer.errors import StudyNotFound, UnreadableVolume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Volume:
    """A 3D study. array: float32 (I, J, K) in nibabel order; affine: 4x4 voxel -> RAS mm."""

    path: str
    key: str
    array: np.ndarray
    affine: np.ndarray
    header: nib.Nifti1Header | None = None
    description: str = ""
    _sitk: object = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k."""
        return tuple(float(s) for s in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))  # type: ignore[return-value]

    @property
    def voxel_mm3(self) -> float:
        """One voxel's volume in mm^3."""
        return float(abs(np.linalg.det(self.affine[:3, :3])))

    @property
    def axcodes(self) -> str:
        return "".join(nib.aff2axcodes(self.affine))

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.spacing, strict=True))  # type: ignore[return-value]

    @property
    def held_nbytes(self) -> int:
        """What a cached volume is charged: its voxel array and the SimpleITK copy that registration builds."""
        return 2 * int(self.array.nbytes)

    def to_sitk(self):
        """The same voxels as a SimpleITK image (LPS physical space), built once."""
        if self._sitk is None:
            self._sitk = array_to_sitk(self.array, self.affine)
        return self._sitk


def array_to_sitk(array: np.ndarray, affine: np.ndarray, offset=(0, 0, 0)):
    """(I, J, K) array + RAS affine -> SimpleITK image; `offset` places a sub-block (voxel index of its corner)."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    lps = _LPS @ affine
    spacing = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    origin = lps[:3, 3] + lps[:3, :3] @ np.asarray(offset, dtype=float)
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(v) for v in origin])
    image.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    return image


def content_key(array: np.ndarray, affine: np.ndarray) -> str:
    """Hash of the voxels and the geometry, so a re-saved copy of a study has the same key as the original."""
    digest = hashlib.sha1(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    digest.update(np.round(affine, 4).astype(np.float64).tobytes())
    return digest.hexdigest()[:16]


def load_volume(path: str | os.PathLike, name: str | None = None) -> Volume:
    """Load a 3D volume; raises StudyNotFound / UnreadableVolume with a sentence naming the file."""
    path = str(path)
    shown = name or os.path.basename(path)
    if not path or not os.path.exists(path):
        raise StudyNotFound(f"The study '{shown}' does not exist.")
    if os.path.isdir(path):
        raise UnreadableVolume(
            f"The study '{shown}' is a folder; SEER reads single-file volumes (NIfTI, NRRD, MHA). "
            "Convert DICOM series to NIfTI first (e.g. with dcm2niix)."
        )
    try:
        with open(path, "rb") as fp:
            data = fp.read()
    except OSError as exc:
        raise UnreadableVolume(f"The study '{shown}' could not be read: {exc.strerror}.") from None
    lower = path.lower()
    if lower.endswith(NIFTI_SUFFIXES):
        return _load_nifti(path, shown, data)
    if lower.endswith(ITK_SUFFIXES):
        return _load_itk(path, shown)
    raise UnreadableVolume(f"The study '{shown}' has an unsupported file type; use .nii.gz, .nii, .nrrd or .mha.")


def _load_nifti(path: str, shown: str, data: bytes) -> Volume:
    try:
        raw = gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data
        image = nib.Nifti1Image.from_bytes(raw) if raw[344:348] in (b"n+1\x00", b"ni1\x00") else None
        if image is None:
            image = nib.Nifti2Image.from_bytes(raw)
        array = np.asanyarray(image.dataobj)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault, reported as such
        raise UnreadableVolume(
            f"The study '{shown}' is not a readable NIfTI volume ({_short(exc)}); re-export it or remove it "
            "from the studies folder."
        ) from None
    array = _as_3d(array, shown)
    description = ""
    with contextlib.suppress(KeyError, ValueError):
        description = image.header["descrip"].tobytes().split(b"\x00")[0].decode("ascii", "ignore")
    affine = image.affine.astype(np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-9:
        raise UnreadableVolume(f"The study '{shown}' has an invalid voxel-to-world matrix; fix its header.")
    key = content_key(array, affine)
    return Volume(path=path, key=key, array=array, affine=affine, header=image.header, description=description)


def _load_itk(path: str, shown: str) -> Volume:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(path, sitk.sitkFloat32)
    except RuntimeError as exc:
        raise UnreadableVolume(f"The study '{shown}' could not be read by ITK ({_short(exc)}).") from None
    if image.GetDimension() != 3:
        raise UnreadableVolume(f"The study '{shown}' is {image.GetDimension()}D; SEER segments 3D volumes.")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    affine = _itk_affine(image)
    array = np.ascontiguousarray(array, dtype=np.float32)
    return Volume(path=path, key=content_key(array, affine), array=array, affine=affine)


def _as_3d(array: np.ndarray, shown: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim == 5 and array.shape[3] == 1 and array.shape[4] == 1:
        array = array[..., 0, 0]
    if array.ndim != 3:
        raise UnreadableVolume(
            f"The study '{shown}' has shape {tuple(array.shape)}; SEER segments single 3D volumes "
            "(split 4D series into one file per volume)."
        )
    if min(array.shape) < 2:
        raise UnreadableVolume(f"The study '{shown}' has shape {tuple(array.shape)}, which is not a 3D volume.")
    array = np.asarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    return array


def load_labels(path: str | os.PathLike, name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An integer label map (I, J, K) and its voxel -> RAS affine, without a float copy; NIfTI through nibabel,
    NRRD / MHA (what Slicer saves) through SimpleITK. Errors as for load_volume."""
    shown = name or os.path.basename(str(path))
    if not os.path.exists(path):
        raise StudyNotFound(f"The label map '{shown}' does not exist.")
    if str(path).lower().endswith(ITK_SUFFIXES):
        return _load_itk_labels(str(path), shown)
    try:
        image = nib.load(str(path))
        array = np.asanyarray(image.dataobj)
    except Exception as exc:  # noqa: BLE001 - any decoding failure is the file's fault
        raise UnreadableVolume(f"The label map '{shown}' is not a readable NIfTI volume ({_short(exc)}).") from None
    array = _as_3d_labels(array, shown)
    return array, image.affine.astype(np.float64)


def _load_itk_labels(path: str, shown: str) -> tuple[np.ndarray, np.ndarray]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(path)
    except RuntimeError as exc:
        raise UnreadableVolume(f"The label map '{shown}' could not be read by ITK ({_short(exc)}).") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise UnreadableVolume(f"The label map '{shown}' has several components per voxel; expected one label map.")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0) if image.GetDimension() == 3 else None
    if array is None:
        raise UnreadableVolume(f"The label map '{shown}' is {image.GetDimension()}D; expected a 3D label map.")
    return _as_3d_labels(np.ascontiguousarray(array), shown), _itk_affine(image)


def _itk_affine(image) -> np.ndarray:
    """voxel (i, j, k) -> RAS mm of a SimpleITK image (which is in LPS)."""
    spacing = np.array(image.GetSpacing())
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction * spacing
    lps[:3, 3] = image.GetOrigin()
    return _LPS @ lps


def _as_3d_labels(array: np.ndarray, shown: str) -> np.ndarray:
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise UnreadableVolume(f"The label map '{shown}' has shape {tuple(array.shape)}; expected a 3D label map.")
    if np.issubdtype(array.dtype, np.floating):
        array = np.rint(np.nan_to_num(array))
    top = int(array.max(initial=0))
    return array.astype(np.uint8 if top < 256 else np.uint16 if top < 65536 else np.int32, copy=False)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:160]


class VolumeCache:
    """Thread-safe LRU of loaded volumes keyed by (path, mtime, size), bounded in bytes: each volume is charged
    twice its voxel array (the array and the SimpleITK copy that registration builds from it)."""

    def __init__(self, max_mb: float = 1024):
        self._items = BoundedCache("volume", max_bytes=int(max_mb * 2**20), sizeof=lambda v: v.held_nbytes)

    def get(self, path: str | os.PathLike, name: str | None = None) -> Volume:
        path = str(path)
        try:
            stat = os.stat(path)
            stamp = (os.path.realpath(path), stat.st_mtime_ns, stat.st_size)
        except OSError:
            return load_volume(path, name)  # raises the right error
        return self._items.get_or_make(stamp, lambda: load_volume(path, name))

    def stats(self) -> dict:
        return self._items.stats()


def write_mask(
    mask: np.ndarray, like: Volume, path: str | os.PathLike, value: int | None = None, compresslevel: int = 1,
    dtype=None,
) -> str:
    """Write a mask (I, J, K) on `like`'s grid as NIfTI-1, atomically (temp file + rename).

    `mask` is an integer label array, or a boolean array written as `value` inside and 0 outside. The header comes
    from nibabel; the voxels are produced once in Fortran order and streamed into gzip (level 1): 2x faster than
    nibabel's to_bytes() + gzip for a 1 mm brain.
    """
    path = str(path)
    top = int(value) if value is not None else int(mask.max(initial=0))
    dtype = np.dtype(dtype) if dtype is not None else np.dtype(np.uint8 if top < 256 else np.uint16)
    header = nib.Nifti1Header()
    header.set_data_shape(mask.shape)
    header.set_data_dtype(dtype)
    header.set_xyzt_units("mm")
    if like.header is not None:  # a form the study leaves unset (code 0) gets the study's affine, never its zeros:
        qform_code, sform_code = int(like.header["qform_code"]), int(like.header["sform_code"])  # ITK reads the qform
        header.set_qform(like.header.get_qform() if qform_code else like.affine, code=qform_code or 1)
        header.set_sform(like.header.get_sform() if sform_code else like.affine, code=sform_code or 1)
    else:
        header.set_qform(like.affine, code=1)
        header.set_sform(like.affine, code=1)
    header["vox_offset"] = 352
    header["scl_slope"] = 1.0
    header["scl_inter"] = 0.0
    head = header.binaryblock + b"\x00" * 4
    if value is not None:  # (K, J, I) C-order == (I, J, K) Fortran order, built in one pass
        voxels = np.multiply(mask.T, top, dtype=dtype, order="C").T
    else:
        voxels = np.asfortranarray(mask, dtype=dtype)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with open(tmp, "wb") as fp:
        if path.endswith(".gz"):
            packer = zlib.compressobj(compresslevel, zlib.DEFLATED, 31)
            fp.write(packer.compress(head))
            fp.write(packer.compress(memoryview(voxels.T.reshape(-1)).cast("B")))
            fp.write(packer.flush())
        else:
            fp.write(head)
            fp.write(voxels.T.tobytes())
    os.replace(tmp, path)
    return path


RESULT_EXTENSIONS = (".nii.gz", ".nii", ".nrrd")
RESULT_DTYPES = {"uint8": np.uint8, "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
                 "float32": np.float32}


@dataclass(frozen=True)
class ResultFormat:
    """How a client wants the mask file (MONAI Label's `result_extension`, `result_dtype`, `result_compress`,
    as OHIF sends them): extension .nii.gz | .nii | .nrrd; dtype None = the smallest unsigned type that holds the
    target id; compress: gzip inside NRRD (.nii.gz is always gzip, .nii never)."""

    extension: str = ".nii.gz"
    dtype: str | None = None
    compress: bool = True

    @classmethod
    def from_params(cls, params: dict) -> ResultFormat:
        """Parse and check the request's params; raises BadRequest (HTTP 422) naming the accepted values."""
        from seer.errors import BadRequest

        extension = str(params.get("result_extension") or ".nii.gz").strip().lower()
        extension = extension if extension.startswith(".") else "." + extension
        if extension not in RESULT_EXTENSIONS:
            raise BadRequest(f"result_extension '{extension}' cannot be written here; choose one of "
                             f"{', '.join(RESULT_EXTENSIONS)}.")
        dtype = params.get("result_dtype") or None
        if dtype is not None and str(dtype) not in RESULT_DTYPES:
            raise BadRequest(f"result_dtype '{dtype}' is not supported; choose one of {', '.join(RESULT_DTYPES)}.")
        compress = params.get("result_compress", True)
        if isinstance(compress, str):
            compress = compress.strip().lower() not in ("0", "false", "no", "off")
        return cls(extension, None if dtype is None else str(dtype), bool(compress))

    @property
    def is_default(self) -> bool:
        return self == ResultFormat()

    def check_value(self, value: int, name: str) -> None:
        """A label value the dtype cannot hold is refused (never wrapped around into another label's value)."""
        from seer.errors import BadRequest

        if self.dtype is None:
            return
        limit = np.iinfo(RESULT_DTYPES[self.dtype]).max if self.dtype != "float32" else 2**24
        if value > limit:
            raise BadRequest(f"The target '{name}' has label value {value}, which result_dtype {self.dtype} cannot "
                             f"hold (at most {limit}); ask for uint16 or leave result_dtype unset.")

    def write(self, mask: np.ndarray, like: Volume, path: str | os.PathLike, value: int) -> str:
        """The boolean mask (I, J, K) written as `value` on `like`'s grid, atomically."""
        path = str(path)
        if self.extension != ".nrrd":
            return write_mask(mask, like, path, value=value, dtype=RESULT_DTYPES.get(self.dtype or ""))
        import SimpleITK as sitk

        dtype = RESULT_DTYPES[self.dtype] if self.dtype else (np.uint8 if value < 256 else np.uint16)
        image = array_to_sitk(np.multiply(mask, value, dtype=dtype), like.affine)
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".tmp-{os.getpid()}-{threading.get_ident()}-{name}")  # keeps the .nrrd suffix
        sitk.WriteImage(image, tmp, useCompression=self.compress)
        os.replace(tmp, path)
        return path


"""Build the demo studies and bundled atlases from packages (nothing is downloaded).

- MNI152 2009a symmetric T1 (skull-stripped) with grey/white-matter and CSF labels derived from its tissue
  probability maps, and a brain mask: shipped inside the `nilearn` wheel.
- Colin27 T1 (with skull) with the AAL atlas (116 regions) and a brain mask from its skull-stripped twin: from
  Debian's `mricron-data` package (/usr/share/mricron/templates). When it is missing, the builder says how to
  install it and continues with MNI152 alone.

Layout written under `dest` (git-ignored):
  mni152_t1.nii.gz, colin27_t1.nii.gz                       studies shown by the server
  atlases/<name>/image.nii.gz, labels.nii.gz, labels.json  bundled atlases of the atlas backbone
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

logger = logging.getLogger(__name__)

MRICRON_TEMPLATES = Path(os.environ.get("SEER_MRICRON_TEMPLATES", "/usr/share/mricron/templates"))
MRICRON_HINT = (
    "Colin27 and the AAL atlas come from Debian's mricron-data package, which is not installed: "
    "run `sudo apt-get install mricron-data` and build again; continuing with MNI152 only."
)
TISSUE_NAMES = {1: "grey_matter", 2: "white_matter", 3: "cerebrospinal_fluid"}


def nilearn_data_dir() -> Path:
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data"


def is_complete(dest: str | os.PathLike) -> bool:
    dest = Path(dest)
    return (dest / "mni152_t1.nii.gz").exists() and (dest / "atlases" / "mni152-tissue" / "labels.json").exists()


def build(dest: str | os.PathLike, force: bool = False, say=print) -> dict:
    """Write the sample studies and atlases; returns what was written and what was missing."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    report: dict = {"studies": [], "atlases": [], "missing": []}
    _build_mni152(dest, force, report, say)
    if (MRICRON_TEMPLATES / "ch2.nii.gz").exists() and (MRICRON_TEMPLATES / "aal.nii.gz").exists():
        _build_colin27(dest, force, report, say)
    else:
        say(MRICRON_HINT)
        report["missing"].append("mricron-data")
    return report


def _write_atlas(folder: Path, image: nib.Nifti1Image, labels: np.ndarray, names: dict[int, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(image, str(folder / "image.nii.gz"))
    label_image = nib.Nifti1Image(labels.astype(np.uint8), image.affine)
    label_image.header.set_qform(image.affine, code=1)
    label_image.header.set_sform(image.affine, code=1)
    nib.save(label_image, str(folder / "labels.nii.gz"))
    (folder / "labels.json").write_text(json.dumps({str(k): v for k, v in names.items()}, indent=1))


def _build_mni152(dest: Path, force: bool, report: dict, say) -> None:
    data = nilearn_data_dir()
    t1_path = data / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    study = dest / "mni152_t1.nii.gz"
    tissue_dir = dest / "atlases" / "mni152-tissue"
    brain_dir = dest / "atlases" / "mni152-brain"
    if not force and study.exists() and (tissue_dir / "labels.json").exists() and (brain_dir / "labels.json").exists():
        report["studies"].append(str(study))
        report["atlases"] += [str(tissue_dir), str(brain_dir)]
        return
    say("sample-data: MNI152 T1 and tissue atlas from nilearn's package data")
    t1 = nib.load(str(t1_path))
    t1_data = np.asanyarray(t1.dataobj).astype(np.float32)
    gm = np.asanyarray(nib.load(str(data / "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz")).dataobj)
    wm = np.asanyarray(nib.load(str(data / "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz")).dataobj)
    gm = gm.astype(np.float32) / max(float(gm.max()), 1.0)
    wm = wm.astype(np.float32) / max(float(wm.max()), 1.0)
    brain = t1_data > 0.2 * float(t1_data.max())
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    tissue = np.argmax(np.stack([csf, gm, wm]), axis=0)  # 0 csf, 1 gm, 2 wm
    labels = np.zeros(t1_data.shape, dtype=np.uint8)
    labels[brain & (tissue == 1)] = 1
    labels[brain & (tissue == 2)] = 2
    labels[brain & (tissue == 0)] = 3
    shutil.copyfile(t1_path, study)
    _write_atlas(tissue_dir, t1, labels, TISSUE_NAMES)
    _write_atlas(brain_dir, t1, brain.astype(np.uint8), {1: "brain"})
    report["studies"].append(str(study))
    report["atlases"] += [str(tissue_dir), str(brain_dir)]


def _build_colin27(dest: Path, force: bool, report: dict, say) -> None:
    study = dest / "colin27_t1.nii.gz"
    aal_dir = dest / "atlases" / "colin27-aal"
    brain_dir = dest / "atlases" / "colin27-brain"
    if not force and study.exists() and (aal_dir / "labels.json").exists() and (brain_dir / "labels.json").exists():
        report["studies"].append(str(study))
        report["atlases"] += [str(aal_dir), str(brain_dir)]
        return
    say("sample-data: Colin27 T1 and AAL atlas from mricron-data")
    t1 = nib.load(str(MRICRON_TEMPLATES / "ch2.nii.gz"))
    aal = nib.load(str(MRICRON_TEMPLATES / "aal.nii.gz"))
    bet = nib.load(str(MRICRON_TEMPLATES / "ch2bet.nii.gz"))
    names = {}
    for line in (MRICRON_TEMPLATES / "aal.nii.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            names[int(parts[0])] = parts[1]
    shutil.copyfile(MRICRON_TEMPLATES / "ch2.nii.gz", study)
    aal_labels = np.rint(np.asanyarray(aal.dataobj)).astype(np.uint8)
    _write_atlas(aal_dir, t1, aal_labels, names)
    _write_atlas(brain_dir, t1, (np.asanyarray(bet.dataobj) > 0).astype(np.uint8), {1: "brain"})
    report["studies"].append(str(study))
    report["atlases"] += [str(aal_dir), str(brain_dir)]

"""Segmentation quality of the atlas backbone on references it did not see.

1. Colin27 (study) with the MNI152 atlases: brain vs Colin27's own skull-stripped ch2bet; grey / white matter vs a
   3-class k-means of ch2bet intensities inside the brain. Affine-only vs affine + demons in the same run.
2. Leave-one-atlas-out for AAL: a new subject made from Colin27 by a known smooth random deformation (max ~6 mm),
   a multiplicative bias field and noise; the original Colin27 + AAL is the only atlas; reference = the AAL labels
   warped by the same known transform (a global affine: 6/4 degree rotations, 3-6 % scaling, 10 mm shift, then a
   smooth random field of up to 8 mm). 'identity' = no registration (how far the deformation moves things).
3. CT/MR abdomen: the TotalSegmentator-labelled abdomen-pelvis CT as the only atlas for a CT slab of the same patient,
   a CT crop of another patient (ct-spleen, hand-drawn reference) and an abdominal MRI (cross-modality, affine only).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from _util import SHARED_DATA, Timer, need_sample_data, save, table

from seer.errors import Refusal
from seer.imaging.evidence import describe_volume
from seer.imaging.volume import load_volume
from seer.metrics import dice
from seer.reasoning.targets import Resolver
from seer.sample_data import MRICRON_TEMPLATES as MRICRON  # noqa: E402 - $SEER_MRICRON_TEMPLATES or Debian's
from seer.segmentation.atlases import AtlasSource, LabelRegistry, bundled_atlases
from seer.segmentation.backbones.atlas import AtlasBackbone, AtlasSettings
from seer.segmentation.registration import RegistrationSettings


def evidence(volume):
    return describe_volume(volume)


def backbone(sources, deformable: bool, cache: Path):
    settings = AtlasSettings(registration=RegistrationSettings(deformable=deformable))
    return AtlasBackbone(lambda: sources, LabelRegistry(), cache_dir=cache, settings=settings)


def run_segment(bb, volume, text):
    ev = evidence(volume)
    entry = Resolver(bb.label_table()).resolve(text, ev.region).entry
    with Timer() as t:
        try:
            seg = bb.segment(volume, entry, ev)
        except Refusal as refusal:
            return None, t, str(refusal)
    return seg, t, None


def colin27_tissue(sample: Path, cache: Path) -> list[dict]:
    from sklearn.cluster import KMeans

    bet = np.asanyarray(nib.load(str(MRICRON / "ch2bet.nii.gz")).dataobj).astype(np.float32)
    brain = bet > 0
    values = bet[brain].reshape(-1, 1)
    km = KMeans(3, n_init=4, random_state=0).fit(values[::10])
    order = np.argsort(km.cluster_centers_.ravel())
    classes = np.zeros(bet.shape, np.uint8)
    classes[brain] = np.argsort(order)[km.predict(values)] + 1  # 1 CSF, 2 GM, 3 WM
    refs = {"brain": brain, "grey matter": classes == 2, "white matter": classes == 3}
    sources = [s for s in bundled_atlases([sample / "atlases"]) if s.name.startswith("mni152")]
    study = load_volume(sample / "colin27_t1.nii.gz")
    rows = []
    for deformable in (False, True):
        bb = backbone(sources, deformable, cache / f"tissue-{deformable}")
        for text, ref in refs.items():
            seg, t, _ = run_segment(bb, study, text)
            rows.append({"case": "Colin27 <- MNI152", "target": text, "mode": "affine+demons" if deformable else "affine",
                         "dice": dice(seg.mask, ref), "seconds": t.seconds,
                         "registration": seg.details["atlases"][0]["registration"]})
    return rows


def synthetic_subject(sample: Path, folder: Path, seed: int = 3):
    """Colin27 + AAL deformed by a known smooth field; returns (study path, warped AAL array)."""
    image = sitk.ReadImage(str(sample / "atlases" / "colin27-aal" / "image.nii.gz"), sitk.sitkFloat32)
    labels = sitk.ReadImage(str(sample / "atlases" / "colin27-aal" / "labels.nii.gz"), sitk.sitkUInt8)
    rng = np.random.default_rng(seed)
    coarse = [int(s) // 4 for s in image.GetSize()]
    field = np.stack([rng.normal(size=coarse[::-1]) for _ in range(3)], axis=-1).astype(np.float64)
    disp = sitk.GetImageFromArray(field, isVector=True)
    disp.SetSpacing([sp * 4 for sp in image.GetSpacing()])
    disp.SetOrigin(image.GetOrigin())
    disp.SetDirection(image.GetDirection())
    disp = sitk.SmoothingRecursiveGaussian(disp, 15.0)
    arr = sitk.GetArrayFromImage(disp)
    arr *= 8.0 / np.abs(arr).max()  # max 8 mm
    disp = sitk.GetImageFromArray(arr, isVector=True)
    disp.SetSpacing([sp * 4 for sp in image.GetSpacing()])
    disp.SetOrigin(image.GetOrigin())
    disp.SetDirection(image.GetDirection())
    dense = sitk.Resample(disp, image, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkVectorFloat64)
    local = sitk.DisplacementFieldTransform(dense)
    glob = sitk.Euler3DTransform()
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    glob.SetCenter(centre)
    glob.SetRotation(np.deg2rad(4.0), 0.0, np.deg2rad(6.0))
    glob.SetTranslation([8.0, -6.0, 5.0])
    scale = sitk.ScaleTransform(3, [1.06, 0.95, 1.03])
    scale.SetCenter(centre)
    transform = sitk.CompositeTransform([glob, scale, local])
    warped = sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0)
    warped_labels = sitk.Resample(labels, image, transform, sitk.sitkNearestNeighbor, 0)
    w = sitk.GetArrayFromImage(warped)
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in w.shape], indexing="ij")
    bias = 1.0 + 0.15 * xx + 0.1 * yy * zz
    w = w * bias + rng.normal(scale=3.0, size=w.shape)
    out = sitk.GetImageFromArray(w.astype(np.float32))
    out.CopyInformation(image)
    path = folder / "colin27_deformed.nii.gz"
    sitk.WriteImage(out, str(path))
    return path, sitk.GetArrayFromImage(warped_labels).transpose(2, 1, 0)


def aal_leave_one_out(sample: Path, cache: Path, tmp: Path) -> list[dict]:
    study_path, truth = synthetic_subject(sample, tmp)
    names = {v: k for k, v in json.loads((sample / "atlases" / "colin27-aal" / "labels.json").read_text()).items()}
    original = np.asanyarray(nib.load(str(sample / "atlases" / "colin27-aal" / "labels.nii.gz")).dataobj)
    sources = [s for s in bundled_atlases([sample / "atlases"]) if s.name == "colin27-aal"]
    study = load_volume(study_path)
    regions = ["Hippocampus_L", "Hippocampus_R", "Amygdala_L", "Thalamus_L", "Thalamus_R", "Putamen_R", "Caudate_L",
               "Precentral_L", "Calcarine_R", "Cerebelum_Crus1_L"]
    rows = []
    for name in regions:
        value = int(names[name])
        rows.append({"case": "AAL leave-one-out", "target": name, "mode": "identity",
                     "dice": dice(original == value, truth == value), "seconds": 0.0, "registration": "none"})
    for deformable in (False, True):
        bb = backbone(sources, deformable, cache / f"aal-{deformable}")
        for name in regions:
            seg, t, _ = run_segment(bb, study, name)
            rows.append({"case": "AAL leave-one-out", "target": name,
                         "mode": "affine+demons" if deformable else "affine",
                         "dice": dice(seg.mask, truth == int(names[name])), "seconds": t.seconds,
                         "registration": seg.details["atlases"][0]["registration"]})
    return rows


def abdomen(cache: Path) -> list[dict]:
    if not (SHARED_DATA / "ct-abdomen-pelvis").exists():
        return []
    src = SHARED_DATA / "ct-abdomen-pelvis"
    names = {int(k): v for k, v in json.loads((src / "labels.json").read_text()).items()}
    source = AtlasSource("ct-abdomen-pelvis", str(src / "image.nii.gz"), str(src / "labels.nii.gz"), names)
    rows = []
    for study_name, targets in [("ct-abdomen-small", ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "aorta"]),
                                ("ct-spleen", ["spleen"]),
                                ("mr-abdomen-small", ["liver", "spleen", "kidney_left", "kidney_right", "stomach", "aorta"])]:
        folder = SHARED_DATA / study_name
        study = load_volume(folder / "image.nii.gz")
        ref = np.rint(load_volume(folder / "labels.nii.gz").array)
        ref_names = {v: int(k) for k, v in json.loads((folder / "labels.json").read_text()).items()}
        bb = backbone([source], True, cache / "abdomen")
        for target in targets:
            seg, t, refusal = run_segment(bb, study, target)
            rows.append({"case": f"{study_name} <- ct-abdomen-pelvis", "target": target,
                         "mode": "affine+demons" if evidence(study).modality == "CT" else "affine (MR vs CT)",
                         "dice": dice(seg.mask, ref == ref_names[target]) if seg is not None else 0.0,
                         "seconds": t.seconds,
                         "registration": seg.details["atlases"][0]["registration"] if seg else f"refused: {refusal[:60]}"})
    return rows


def main():
    sample = need_sample_data()
    if not (sample / "colin27_t1.nii.gz").exists():
        raise SystemExit("needs Colin27 (sudo apt-get install mricron-data)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        rows = colin27_tissue(sample, tmp / "cache") + aal_leave_one_out(sample, tmp / "cache", tmp) + abdomen(tmp / "cache")
        shutil.rmtree(tmp / "cache", ignore_errors=True)
    print(table(rows, ["case", "target", "mode", "dice", "seconds", "registration"]))
    summary = {}
    for case in sorted({r["case"] for r in rows}):
        for mode in sorted({r["mode"] for r in rows if r["case"] == case}):
            values = [r["dice"] for r in rows if r["case"] == case and r["mode"] == mode]
            summary[f"{case} | {mode}"] = float(np.mean(values))
    print("\nmean Dice per case and mode:")
    for key, value in summary.items():
        print(f"  {key}: {value:.3f}")
    aal = {m: summary.get(f"AAL leave-one-out | {m}") for m in ("identity", "affine", "affine+demons")}
    if aal["affine"]:
        print(f"\nAAL ratio affine+demons / affine Dice: {aal['affine+demons'] / aal['affine']:.3f}x")
    save("atlas_quality", {"rows": rows, "summary": summary})


if __name__ == "__main__":
    main()

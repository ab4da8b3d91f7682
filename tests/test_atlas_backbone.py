"""The multi-atlas backbone on real volumes: quality floor, laterality, orientation, caching, refusals."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from seer.errors import Refusal
from seer.imaging.evidence import describe_volume
from seer.imaging.volume import load_volume
from seer.metrics import dice
from seer.reasoning.targets import Resolver
from seer.sample_data import MRICRON_TEMPLATES as MRICRON  # noqa: E402 - $SEER_MRICRON_TEMPLATES or Debian's
from seer.segmentation.atlases import AtlasSource, LabelRegistry, bundled_atlases
from seer.segmentation.backbones.atlas import AtlasBackbone, AtlasSettings

from conftest import label_map


def evidence_of(volume):
    return describe_volume(volume)


@pytest.fixture(scope="module")
def backbone(sample_data, tmp_path_factory):
    cache = tmp_path_factory.mktemp("atlas-cache")
    return AtlasBackbone(lambda: bundled_atlases([sample_data / "atlases"]), LabelRegistry(), cache_dir=cache)


def entry(backbone, text, region=None):
    result = Resolver(backbone.label_table()).resolve(text, region)
    assert result.ok, result.reason
    return result.entry


@pytest.mark.slow
def test_brain_on_colin27_from_the_mni152_atlas(backbone, colin27):
    volume = load_volume(colin27)
    seg = backbone.segment(volume, entry(backbone, "brain"), evidence_of(volume))
    assert [a["atlas"] for a in seg.details["atlases"]] == ["mni152-brain"]  # never the study's own atlas
    reference = np.asanyarray(nib.load(f"{MRICRON}/ch2bet.nii.gz").dataobj) > 0
    assert seg.mask.shape == volume.shape
    assert dice(seg.mask, reference) > 0.9


@pytest.mark.slow
def test_left_hippocampus_lands_on_the_patients_left(backbone, sample_data, colin27):
    volume = load_volume(sample_data / "mni152_t1.nii.gz")
    seg = backbone.segment(volume, entry(backbone, "left hippocampus"), evidence_of(volume))
    ijk = np.argwhere(seg.mask).mean(axis=0)
    x_ras = (volume.affine @ np.append(ijk, 1.0))[0]
    assert 1000 < seg.mask.sum() < 20000
    assert x_ras < -10, "RAS x of a left structure is negative"
    again = backbone.segment(volume, entry(backbone, "left hippocampus"), evidence_of(volume))
    assert again.details["atlases"][0]["registration"] == "memory cache"
    np.testing.assert_array_equal(again.mask, seg.mask)


@pytest.mark.slow
def test_registrations_are_reused_from_disk(backbone, sample_data, colin27):
    volume = load_volume(sample_data / "mni152_t1.nii.gz")
    backbone.segment(volume, entry(backbone, "right amygdala"), evidence_of(volume))  # registered (or cached) here
    fresh = AtlasBackbone(lambda: bundled_atlases([sample_data / "atlases"]), LabelRegistry(),
                          cache_dir=backbone.cache_dir)
    target = entry(fresh, "right amygdala")
    seg = fresh.segment(volume, target, evidence_of(volume))
    assert seg.details["atlases"][0]["registration"] == "disk cache"
    ijk = np.argwhere(seg.mask).mean(axis=0)
    assert (volume.affine @ np.append(ijk, 1.0))[0] > 10


@pytest.mark.slow
def test_flipped_storage_order_gives_the_same_anatomy(backbone, sample_data, colin27, tmp_path):
    """An LPS-stored copy of the study: the mask follows the data, and left stays left."""
    original = nib.load(str(sample_data / "mni152_t1.nii.gz"))
    data = np.asanyarray(original.dataobj)[::-1, ::-1, :]
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[0, 3] = data.shape[0] - 1
    flip[1, 3] = data.shape[1] - 1
    lps = nib.Nifti1Image(np.ascontiguousarray(data), original.affine @ flip)
    assert nib.aff2axcodes(lps.affine) == ("L", "P", "S")
    nib.save(lps, str(tmp_path / "mni152_lps.nii.gz"))
    flipped = load_volume(tmp_path / "mni152_lps.nii.gz")
    base = load_volume(sample_data / "mni152_t1.nii.gz")
    target = entry(backbone, "left hippocampus")
    seg_flipped = backbone.segment(flipped, target, evidence_of(flipped))
    seg_base = backbone.segment(base, target, evidence_of(base))
    assert dice(seg_flipped.mask[::-1, ::-1, :], seg_base.mask) > 0.85
    ijk = np.argwhere(seg_flipped.mask).mean(axis=0)
    assert (flipped.affine @ np.append(ijk, 1.0))[0] < -10


def test_the_study_is_never_its_own_atlas(backbone, colin27):
    volume = load_volume(colin27)  # Colin27 is the only AAL atlas
    with pytest.raises(Refusal, match="only atlas holding 'Hippocampus_L' is this study itself"):
        backbone.segment(volume, entry(backbone, "left hippocampus"), evidence_of(volume))


def _ct_atlas(shared_data, tmp_path):
    folder = tmp_path / "atlases" / "ct-pelvis"
    folder.mkdir(parents=True)
    for name in ("image.nii.gz", "labels.nii.gz", "labels.json"):
        shutil.copy(shared_data / "ct-abdomen-pelvis" / name, folder / name)
    return folder.parent


@pytest.mark.slow
def test_ct_atlas_segments_an_overlapping_slab_and_refuses_what_is_outside(shared_data, tmp_path):
    atlases = _ct_atlas(shared_data, tmp_path)
    backbone = AtlasBackbone(lambda: bundled_atlases([atlases]), LabelRegistry(), cache_dir=tmp_path / "cache")
    volume = load_volume(shared_data / "ct-abdomen-small" / "image.nii.gz")
    evidence = evidence_of(volume)
    liver = entry(backbone, "liver", evidence.region)
    seg = backbone.segment(volume, liver, evidence)
    reference_labels = np.rint(load_volume(shared_data / "ct-abdomen-small" / "labels.nii.gz").array)
    names = {v: k for k, v in label_map(shared_data / "ct-abdomen-small").items()}
    assert dice(seg.mask, reference_labels == int(names["liver"])) > 0.7
    with pytest.raises(Refusal, match="not found inside this study's field of view"):
        backbone.segment(volume, entry(backbone, "urinary bladder", evidence.region), evidence)


@pytest.mark.slow
def test_atlases_that_name_a_structure_without_voxels_are_not_its_holders(shared_data, tmp_path):
    """A label map may list more names than its volume holds (a crop): such an atlas is skipped for that target,
    and when no atlas holds a voxel of it the request is refused with a sentence (it crashed before)."""
    atlases = _ct_atlas(shared_data, tmp_path)
    pelvis = atlases / "pelvis-only"
    pelvis.mkdir()
    for name in ("image", "labels"):
        image = nib.load(str(shared_data / "ct-abdomen-pelvis" / f"{name}.nii.gz"))
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, :40], image.affine), str(pelvis / f"{name}.nii.gz"))
    shutil.copy(shared_data / "ct-abdomen-pelvis" / "labels.json", pelvis / "labels.json")  # still lists spleen
    volume = load_volume(shared_data / "ct-abdomen-small" / "image.nii.gz")
    evidence = evidence_of(volume)
    both = AtlasBackbone(lambda: bundled_atlases([atlases]), LabelRegistry(), cache_dir=tmp_path / "cache")
    seg = both.segment(volume, entry(both, "spleen", evidence.region), evidence)
    assert [a["atlas"] for a in seg.details["atlases"]] == ["ct-pelvis"]
    shutil.rmtree(atlases / "ct-pelvis")
    only_crop = AtlasBackbone(lambda: bundled_atlases([atlases]), LabelRegistry(), cache_dir=tmp_path / "cache")
    with pytest.raises(Refusal, match="hold no voxel of it"):
        only_crop.segment(volume, entry(only_crop, "spleen", evidence.region), evidence)


@pytest.mark.slow
def test_atlases_are_loaded_after_ranking_into_one_byte_bounded_cache(shared_data, tmp_path):
    """Ranking uses each atlas's summary; only the chosen atlas's voxels are loaded, and everything heavy (atlases,
    downsampled images, target masks, registrations) stays within `cache_mb`."""
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    for name in ("ct-a", "ct-b"):  # two atlases with the same content: ranked by name after modality and extent
        (atlases / name).symlink_to(shared_data / "ct-abdomen-pelvis", target_is_directory=True)
    bound_mb = 64  # two loaded atlases are 25 MB here
    backbone = AtlasBackbone(lambda: bundled_atlases([atlases]), LabelRegistry(), cache_dir=tmp_path / "cache",
                             settings=AtlasSettings(max_atlases=1, cache_mb=bound_mb))
    volume = load_volume(shared_data / "ct-abdomen-small" / "image.nii.gz")
    evidence = evidence_of(volume)
    first = backbone.segment(volume, entry(backbone, "liver", evidence.region), evidence)
    assert [a["atlas"] for a in first.details["atlases"]] == ["ct-a"]
    assert backbone.cache.size <= bound_mb * 2**20
    backbone.cache.clear()  # as after eviction: summaries stay, voxels go
    again = backbone.segment(volume, entry(backbone, "spleen", evidence.region), evidence)
    assert [k[1] for k in backbone.cache.cached_keys() if k[0] == "atlas"] == ["ct-a"]  # ct-b was ranked, not loaded
    assert again.details["atlases"][0]["registration"] == "disk cache"
    assert backbone.cache.size <= bound_mb * 2**20


def test_region_mismatched_atlases_are_refused(shared_data, sample_data, tmp_path):
    atlases = _ct_atlas(shared_data, tmp_path)
    backbone = AtlasBackbone(lambda: bundled_atlases([atlases]), LabelRegistry(), cache_dir=tmp_path / "cache")
    volume = load_volume(sample_data / "mni152_t1.nii.gz")
    target = Resolver(backbone.label_table()).resolve("brain").entry  # TotalSegmentator has a 'brain' label
    with pytest.raises(Refusal, match="Out of region"):
        backbone.segment(volume, target, evidence_of(volume))


def test_registry_ids_are_stable_and_shared_by_synonymous_names(tmp_path):
    path = tmp_path / "label_table.json"
    registry = LabelRegistry(path)
    ids = registry.ensure(["hip_left", "Hip_L", "liver", "left hipbone"])
    assert ids["hip_left"] == ids["Hip_L"] == ids["left hipbone"]
    assert ids["liver"] != ids["hip_left"]
    again = LabelRegistry(path).ensure(["spleen", "liver", "hip_left"])
    assert again["liver"] == ids["liver"] and again["hip_left"] == ids["hip_left"]
    assert again["spleen"] == max(ids.values()) + 1
    assert json.loads(path.read_text())["labels"]["spleen"] == again["spleen"]


def test_unreadable_atlas_is_skipped_not_fatal(tmp_path, sample_data):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "image.nii.gz").write_bytes(b"garbage")
    (folder / "labels.nii.gz").write_bytes(b"garbage")
    (folder / "labels.json").write_text('{"1": "liver"}')
    source = AtlasSource("broken", str(folder / "image.nii.gz"), str(folder / "labels.nii.gz"), {1: "liver"})
    backbone = AtlasBackbone(lambda: [source], LabelRegistry(), cache_dir=tmp_path / "c")
    volume = load_volume(sample_data / "mni152_t1.nii.gz")
    with pytest.raises(Refusal):
        backbone.segment(volume, Resolver(backbone.label_table()).resolve("liver").entry, evidence_of(volume))

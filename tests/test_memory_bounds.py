"""A long run of requests over many distinct studies keeps every cache within its configured bound and the
process's resident memory flat (real CT volumes, the real pipeline with the atlas backbone)."""

import nibabel as nib
import numpy as np
import pytest

from seer.imaging.volume import VolumeCache
from seer.pipeline import build_pipeline
from seer.settings import SeerSettings


def rss_mb() -> float:
    with open("/proc/self/status") as fp:
        for line in fp:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_many_studies_keep_caches_bounded_and_memory_flat(shared_data, tmp_path):
    source = nib.load(str(shared_data / "ct-abdomen-small" / "image.nii.gz"))
    data = np.asanyarray(source.dataobj).astype(np.float32)
    data = data.repeat(2, 0).repeat(2, 1).repeat(2, 2)  # 1.5 mm: 12 MB of voxels per study
    affine = source.affine.copy()
    affine[:3, :3] /= 2
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    (atlases / "ct").symlink_to(shared_data / "ct-abdomen-pelvis", target_is_directory=True)
    settings = SeerSettings.from_conf({
        "atlases": str(atlases), "sample_data": str(tmp_path / "none"), "deformable": "false",
        "affine_spacing": "8", "atlas_cache_mb": "32", "volume_cache_mb": "48",
    })
    volumes = VolumeCache(settings.volume_cache_mb)
    pipeline = build_pipeline(settings, tmp_path / ".seer", volumes=volumes)
    rss = []
    for i in range(14):  # every study is new: distinct content, so nothing is reused across studies
        path = tmp_path / f"study-{i}.nii"
        nib.save(nib.Nifti1Image(data + i, affine), str(path))
        outcome = pipeline.run("liver", volumes.get(path))
        assert outcome.entry.name == "liver" and outcome.mask.any()
        assert pipeline.backbone.cache.size <= 32 * 2**20
        assert volumes.stats()["mb"] <= 48
        rss.append(rss_mb())
        path.unlink()
    # unbounded, each study would add >= 24 MB (its voxels and their SimpleITK copy): 240 MB over the last ten
    growth = max(rss[-4:]) - max(rss[1:5])
    assert growth < 48, f"resident memory grew {growth:.0f} MB after warm-up: {[round(r) for r in rss]}"

import pytest

from seer.imaging.evidence import describe_volume
from seer.imaging.volume import load_volume


@pytest.mark.parametrize(
    "folder,modality,region",
    [
        ("ct-abdomen-pelvis", "CT", "body"),
        ("ct-abdomen-small", "CT", "body"),
        ("ct-spleen", "CT", "body"),
        ("mr-abdomen-small", "MR", "body"),
        ("brain-colin27", "MR", "head"),
    ],
)
def test_modality_and_region_from_the_image(shared_data, folder, modality, region):
    volume = load_volume(shared_data / folder / "image.nii.gz")
    evidence = describe_volume(volume)
    assert evidence.modality == modality
    assert evidence.region == region
    assert f"{modality}-like volume" in evidence.text and "field of view" in evidence.text

import pytest

from seer.errors import BadRequest
from seer.settings import SeerSettings


def test_defaults_parse():
    settings = SeerSettings.from_conf({})
    assert settings.reasoner == "auto" and settings.backbone == "atlas" and settings.max_atlases == 5
    assert settings.embeddings is False


def test_values_are_typed_and_unknown_keys_are_kept_aside():
    settings = SeerSettings.from_conf({"max_atlases": "2", "deformable": "no", "affine_spacing": "4", "models": "x"})
    assert settings.max_atlases == 2 and settings.deformable is False and settings.affine_spacing == 4.0
    assert settings.unknown == ("models",)


@pytest.mark.parametrize(
    "conf,message",
    [
        ({"max_atlases": "many"}, "'max_atlases' must be an integer"),
        ({"deformable": "maybe"}, "'deformable' must be true or false"),
        ({"reasoner": "gpt"}, "'reasoner' must be one of auto, offline"),
        ({"backbone": "unet"}, "'backbone' must be one of atlas"),
        ({"max_atlases": "0"}, "at least 1"),
        ({"atlas_cache_mb": "4"}, "'atlas_cache_mb' must be between 16 and 1048576 MB, got 4"),
        ({"trace_log_mb": "0"}, "'trace_log_mb' must be more than 0, got 0"),
        ({"proposals_keep_days": "-1"}, "'proposals_keep_days' must be more than 0, got -1"),
        ({"affine_spacing": "50"}, "between 0.5 and 10 mm"),
        ({"skill_round": "0"}, "'skill_round' must be at least 1"),
        ({"rewards": "sometimes"}, "'rewards' must be true or false"),
        ({"skill_penalty": "-1"}, "'skill_penalty' must be 0 or more"),
        ({"skill_cap_fraction": "2"}, "'skill_cap_fraction' must be between 0 and 1"),
        ({"skill_harvest_gain": "1.5"}, "'skill_harvest_gain' must be between -1 and 1"),
        ({"al_phrasings": "0"}, "'al_phrasings' must be at least 1"),
        ({"al_backbone": "perhaps"}, "'al_backbone' must be true or false"),
        ({"lease_s": "1e9"}, "'lease_s' must be between 1 second and 7 days"),
    ],
)
def test_bad_values_name_the_key(conf, message):
    with pytest.raises(BadRequest, match=message):
        SeerSettings.from_conf(conf)


def test_a_cuda_device_this_machine_lacks_is_one_sentence():
    import torch

    from seer.devices import select_device

    with pytest.raises(BadRequest, match="Setting 'backbone_device' is cuda:99, but this machine has .*CUDA device"):
        select_device("cuda:99", "backbone_device")
    assert select_device("cpu", "device").type == "cpu"
    assert select_device("auto", "device").type == ("cuda" if torch.cuda.is_available() else "cpu")



def test_the_registries_hold_exactly_the_names_the_settings_validate():
    from seer.reasoning.reasoners import CHOICES, REASONERS
    from seer.segmentation.backbones import BACKBONES
    from seer.settings import BACKBONE_NAMES, REASONER_CHOICES, REASONER_NAMES

    assert tuple(REASONERS) == REASONER_NAMES and CHOICES == REASONER_CHOICES == ("auto", *REASONER_NAMES)
    assert tuple(BACKBONES) == BACKBONE_NAMES


def test_concurrent_inferences_share_the_cores():
    import SimpleITK as sitk
    import torch

    from seer.devices import share_cpu_threads

    before = (sitk.ProcessObject.GetGlobalDefaultNumberOfThreads(), torch.get_num_threads())
    try:
        torch.set_num_threads(8)
        assert share_cpu_threads(2, cores=8) == 4 and sitk.ImageRegistrationMethod().GetNumberOfThreads() == 4
        assert torch.get_num_threads() == 4
        assert share_cpu_threads(0, cores=8) == 8 and share_cpu_threads(1, cores=8) == 8
        assert torch.get_num_threads() == 4  # lowered to a share, never raised above its setting
        assert share_cpu_threads(16, cores=8) == 1 and torch.get_num_threads() == 1
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before[0])
        torch.set_num_threads(before[1])

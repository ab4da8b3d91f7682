"""VoxTell and MONAI-bundle backbones on tiny real networks built in the tests, through the same code that loads
published models: agreement with VoxTell's own predictor, label-indexed selection, orientation and laterality."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch

from seer.errors import BadRequest, Refusal
from seer.imaging.evidence import describe_volume
from seer.imaging.volume import load_volume
from seer.metrics import dice
from seer.pipeline import SeerPipeline
from seer.reasoning.reasoners.offline import OfflineReasoner
from seer.reasoning.skills import SkillBank
from seer.reasoning.targets import Resolver
from seer.segmentation.atlases import AtlasSource, LabelRegistry
from seer.segmentation.backbones.atlas import AtlasBackbone
from seer.segmentation.backbones.monai_bundle import BundleBackbone, BundleSettings
from seer.segmentation.backbones.voxtell import VoxTellBackbone, VoxTellSettings, from_network_layout, to_network_layout

from conftest import flipped_copy, label_map


def evidence_of(volume):
    return describe_volume(volume)


@pytest.fixture(scope="module")
def voxtell(tiny_voxtell):
    return VoxTellBackbone(VoxTellSettings(model_dir=str(tiny_voxtell), device="cpu"))


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return BundleBackbone(BundleSettings(bundle_dir=str(tiny_bundle), device="cpu"))


# -- VoxTell -----------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_voxtell_vocabulary_is_its_embedding_bank(voxtell):
    assert set(voxtell.label_table().names()) == {"liver", "spleen", "left kidney", "right kidney", "left hip bone",
                                                 "right hip bone", "brain"}
    assert voxtell.patch_size == (48, 48, 48) and voxtell.free_text is False


@pytest.mark.slow
def test_voxtell_through_monai_equals_voxtells_own_predictor(voxtell, tiny_voxtell, ct_crop):
    from nnunetv2.imageio.nibabel_reader_writer import NibabelIOWithReorient
    from voxtell.inference.predictor import VoxTellPredictor

    volume = load_volume(ct_crop / "image.nii.gz")
    ours = voxtell.predict(volume, ["liver", "left kidney"])  # several prompts, one pass
    predictor = VoxTellPredictor(model_dir=str(tiny_voxtell), device=torch.device("cpu"),
                                 embedding_bank=str(tiny_voxtell / "text_embeddings.npz"))
    data, _ = NibabelIOWithReorient().read_images([str(ct_crop / "image.nii.gz")])
    theirs = predictor.predict_single_image(data, ["liver", "left kidney"]).astype(bool)
    _, ornt = to_network_layout(volume.array, volume.affine)
    theirs = from_network_layout(theirs, ornt, volume.shape)
    assert ours.shape == theirs.shape == (2, *volume.shape)
    for i in range(2):
        assert ours[i].any()
        assert dice(ours[i], theirs[i]) > 0.99  # VoxTell accumulates logits in float16, we in float32


@pytest.mark.slow
def test_voxtell_masks_follow_the_storage_order(voxtell, ct_crop, tmp_path):
    volume = load_volume(ct_crop / "image.nii.gz")
    flipped = load_volume(flipped_copy(ct_crop / "image.nii.gz", tmp_path / "lps.nii.gz"))
    assert flipped.axcodes == "LPS"
    np.testing.assert_array_equal(voxtell.predict(flipped, ["spleen"])[0][::-1, ::-1, :],
                                  voxtell.predict(volume, ["spleen"])[0])


def test_voxtell_without_text_encoder_refuses_unknown_prompts(voxtell, ct_crop):
    with pytest.raises(Refusal, match="no embedding for 'left ventricle'.*text encoder"):
        voxtell.embed(["left ventricle"])
    pipeline = SeerPipeline(OfflineReasoner(), voxtell, SkillBank.starter())
    volume = load_volume(ct_crop / "image.nii.gz")
    reasoning = pipeline.reason("Segment the LV.", volume)
    assert not reasoning.resolution.ok and reasoning.resolution.kind == "not_in_vocabulary"
    assert pipeline.reason("rt kidney pls", volume).entry.name == "right kidney"


@pytest.mark.slow
def test_voxtell_with_a_text_encoder_takes_the_answer_as_is(tiny_voxtell, ct_crop, tmp_path):
    from tiny_models import build_tiny_text_encoder

    encoder = build_tiny_text_encoder(tmp_path / "encoder")
    backbone = VoxTellBackbone(VoxTellSettings(model_dir=str(tiny_voxtell), text_encoder=str(encoder),
                                               device="cpu"), LabelRegistry())
    assert backbone.free_text
    pipeline = SeerPipeline(OfflineReasoner(), backbone, SkillBank.starter())
    volume = load_volume(ct_crop / "image.nii.gz")
    reasoning = pipeline.reason("contour the enhancing mets", volume)
    assert reasoning.resolution.method == "free text"
    assert reasoning.entry.prompt == reasoning.trace.answer  # handed to VoxTell unchanged
    embedded = backbone.embed([reasoning.entry.prompt])
    assert embedded.shape == (1, 1, 2560)
    assert backbone.encoded.get(reasoning.entry.prompt.lower()) is not None  # cached (bounded) for the session
    assert pipeline.reason("rt hip bone pls", volume).entry.name == "right hip bone"  # the bank still wins


def test_voxtell_folder_must_be_complete(tmp_path):
    with pytest.raises(BadRequest, match="not a VoxTell model folder"):
        VoxTellBackbone(VoxTellSettings(model_dir=str(tmp_path)))


# -- MONAI bundle ------------------------------------------------------------------------------------------------
def test_bundle_label_dictionary_is_the_vocabulary(bundle):
    assert bundle.label_table().names() == {"liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4}


def test_bundle_selects_the_target_channel_on_the_study_grid(bundle, shared_data):
    volume = load_volume(shared_data / "ct-abdomen-pelvis" / "image.nii.gz")
    entry = Resolver(bundle.label_table()).resolve("lt kidney").entry
    seg = bundle.segment(volume, entry, evidence_of(volume))
    assert entry.name == "kidney_left" and seg.details["channel"] == 3
    assert seg.mask.shape == volume.shape and seg.mask.any()
    # the same as argmax over all channels, selected afterwards (computed here the slow way)
    data = bundle.preprocessing({"image": volume.path})
    with torch.inference_mode():
        logits = bundle.inferer(data["image"][None], bundle.network)[0]
    argmax = (logits.argmax(dim=0) == 3)
    selected = logits[3] >= logits.max(dim=0).values
    assert torch.equal(argmax, selected)


def test_bundle_refuses_what_it_cannot_segment_and_lists_its_targets(bundle):
    result = Resolver(bundle.label_table()).resolve("pancreas")
    assert not result.ok and result.kind == "not_in_vocabulary"
    assert "this backbone segments e.g. liver, spleen, kidney_left, kidney_right" in result.reason


def test_bundle_masks_follow_the_storage_order(bundle, shared_data, tmp_path):
    volume = load_volume(shared_data / "ct-abdomen-pelvis" / "image.nii.gz")
    flipped = load_volume(flipped_copy(shared_data / "ct-abdomen-pelvis" / "image.nii.gz", tmp_path / "lps.nii.gz"))
    entry = Resolver(bundle.label_table()).resolve("liver").entry
    a = bundle.segment(volume, entry, evidence_of(volume)).mask
    b = bundle.segment(flipped, entry, evidence_of(flipped)).mask
    assert dice(b[::-1, ::-1, :], a) > 0.99


def test_bundle_folder_must_be_complete(tmp_path):
    with pytest.raises(BadRequest, match="not a MONAI bundle"):
        BundleBackbone(BundleSettings(bundle_dir=str(tmp_path)))


# -- laterality on the flipped abdomen-pelvis CT -----------------------------------------------------------------
@pytest.mark.slow
def test_left_hip_lands_on_the_patients_left_after_flipping_the_storage_order(shared_data, tmp_path):
    src = shared_data / "ct-abdomen-pelvis"
    names = {int(k): v for k, v in label_map(src).items()}
    atlas = AtlasSource("ct", str(src / "image.nii.gz"), str(src / "labels.nii.gz"), names)
    backbone = AtlasBackbone(lambda: [atlas], LabelRegistry(), cache_dir=tmp_path / "cache")
    study = load_volume(flipped_copy(src / "image.nii.gz", tmp_path / "lps.nii.gz"))
    reference = nib.load(flipped_copy(src / "labels.nii.gz", tmp_path / "lps_labels.nii.gz"))
    values = {v: k for k, v in names.items()}
    pipeline = SeerPipeline(OfflineReasoner(), backbone, SkillBank.starter())
    for request, name in (("left hip bone", "hip_left"), ("rt hip bone pls", "hip_right")):
        outcome = pipeline.run(request, study)
        assert outcome.entry.name == name
        truth = np.asanyarray(reference.dataobj) == values[name]
        assert dice(outcome.mask, truth) > 0.9
        x_ras = (study.affine @ np.append(np.argwhere(outcome.mask).mean(axis=0), 1))[0]
        assert (x_ras < 0) == (name == "hip_left")  # RAS: the patient's left has negative x
    shutil.rmtree(tmp_path / "cache")
    json.dumps(outcome.details)


@pytest.mark.slow
def test_a_network_and_label_table_given_in_settings(tiny_bundle, shared_data, tmp_path):
    from seer.pipeline import build_pipeline
    from seer.settings import SeerSettings

    config = json.loads((tiny_bundle / "configs" / "inference.json").read_text())
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": "background", "1": "liver", "2": "spleen", "3": "kidney_left",
                                  "4": "kidney_right"}))
    settings = SeerSettings.from_conf({
        "reasoner": "offline", "backbone": "bundle", "backbone_model": str(tiny_bundle / "models" / "model.pt"),
        "bundle_network": json.dumps(config["network_def"]), "bundle_labels": str(labels), "bundle_roi": "32,32,32",
        "bundle_preprocessing": json.dumps(config["preprocessing"]["transforms"][3:5]),
    })
    pipeline = build_pipeline(settings, None)
    assert pipeline.backbone.label_table().names() == {"liver": 1, "spleen": 2, "kidney_left": 3, "kidney_right": 4}
    volume = load_volume(shared_data / "ct-abdomen-pelvis" / "image.nii.gz")
    outcome = pipeline.run("the liver", volume)
    assert outcome.entry.name == "liver" and outcome.mask.shape == volume.shape and outcome.mask.any()
    with pytest.raises(BadRequest, match="needs --conf bundle_labels"):
        BundleBackbone(BundleSettings(bundle_dir=str(tiny_bundle / "models" / "model.pt"),
                                      network=json.dumps(config["network_def"])))


def test_vista3d_style_bundle_gets_the_label_as_class_prompt(tmp_path, shared_data):
    from tiny_models import build_tiny_bundle

    backbone = BundleBackbone(BundleSettings(bundle_dir=str(build_tiny_bundle(tmp_path / "vista", vista3d=True)),
                                             device="cpu"))
    assert backbone.class_prompt and backbone.sigmoid
    seen = []
    original = backbone.network.forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("class_vector"))
        return original(*args, **kwargs)

    backbone.network.forward = spy
    volume = load_volume(shared_data / "ct-abdomen-small" / "image.nii.gz")
    entry = Resolver(backbone.label_table()).resolve("spleen").entry
    try:
        seg = backbone.segment(volume, entry, evidence_of(volume))
        assert seg.mask.shape == volume.shape
    except Refusal as refusal:  # random weights may predict nothing; the refusal must say so
        assert refusal.kind == "empty_mask"
    assert seen and all(v is not None and v.tolist() == [[entry.id]] for v in seen)

"""`/infer/seer` through the real server with the VoxTell and MONAI-bundle backbones (tiny real networks)."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import running_server

pytestmark = pytest.mark.server


def infer(url, image, prompt):
    return requests.post(f"{url}/infer/seer", params={"image": image, "output": "json"},
                         data={"params": json.dumps({"prompt": prompt})}, timeout=600)


@pytest.fixture(scope="module")
def studies(tmp_path_factory, ct_crop):
    folder = tmp_path_factory.mktemp("backbone-studies")
    shutil.copy(ct_crop / "image.nii.gz", folder / "pelvis_crop.nii.gz")
    return folder


@pytest.mark.parametrize("backbone", ["voxtell", "bundle"])
def test_infer_with_each_backbone(backbone, studies, tiny_voxtell, tiny_bundle, tmp_path):
    model = tiny_voxtell if backbone == "voxtell" else tiny_bundle
    conf = {"backbone": backbone, "backbone_model": model, "backbone_device": "cpu"}
    with running_server(studies, tmp_path / "server.log", conf) as url:
        info = requests.get(f"{url}/info/", timeout=10).json()["models"]["seer"]
        assert info["config"]["backbone"] == [backbone]
        expected = {"voxtell": {"liver", "left kidney", "right hip bone"}, "bundle": {"liver", "kidney_left"}}
        assert expected[backbone] <= set(info["labels"])
        reply = infer(url, "pelvis_crop", "lt kidney pls")
        assert reply.status_code == 200, reply.text
        params = reply.json()
        name = "left kidney" if backbone == "voxtell" else "kidney_left"
        assert params["label_names"] == {name: info["labels"][name]}
        assert params["backbone"]["name"] == backbone and params["voxels"] > 0
        refused = infer(url, "pelvis_crop", "left hippocampus")
        assert refused.status_code == 422 and "Out of region" in refused.json()["detail"]
        proposal = json.loads((studies / ".seer" / "traces.jsonl").read_text().splitlines()[-2])["proposal"]
        mask = nib.load(proposal)
        study = nib.load(studies / "pelvis_crop.nii.gz")
        assert mask.shape == study.shape and np.allclose(mask.affine, study.affine)
        assert int((np.asanyarray(mask.dataobj) > 0).sum()) == params["voxels"]


def test_backbone_needs_its_model_folder(tmp_path, sample_data):
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "serve", "--studies", str(tmp_path), "--conf",
                           "backbone", "voxtell"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "needs 'backbone_model'" in proc.stderr


def test_an_unloadable_model_folder_stops_the_server_with_a_sentence(tmp_path):
    import subprocess
    import sys

    from conftest import REPO

    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "serve", "--studies", str(tmp_path), "--port",
                           "8799", "--conf", "backbone", "bundle", "--conf", "backbone_model", str(tmp_path)],
                          capture_output=True, text=True, timeout=120, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert proc.returncode != 0
    assert "is not a MONAI bundle" in proc.stdout + proc.stderr

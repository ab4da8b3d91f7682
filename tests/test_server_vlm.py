"""The real server with the qwen-vl reasoner on a tiny real Qwen3-VL + LoRA: a format-invalid trace (random
weights) is marked and still resolved through the raw request, never returned unresolved."""

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest
import requests

from conftest import running_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory, sample_data, colin27, tiny_qwen, tiny_lora):
    studies = tmp_path_factory.mktemp("vlm-studies")
    shutil.copy(sample_data / "mni152_t1.nii.gz", studies / "mni152_t1.nii.gz")
    conf = {"reasoner": "qwen-vl", "model": tiny_qwen, "adapter": tiny_lora, "max_new_tokens": 12,
            "reasoner_batch": 4, "infer_concurrency": 4}
    with running_server(studies, tmp_path_factory.mktemp("vlm-log") / "server.log", conf) as url:
        yield url, studies


def test_info_offers_the_loaded_reasoner(vlm_server):
    url, _ = vlm_server
    config = requests.get(f"{url}/info/", timeout=10).json()["models"]["seer"]["config"]
    assert config["reasoner"][0] == "qwen-vl"


def test_infer_with_the_vlm_marks_the_invalid_format_and_resolves_the_request(vlm_server):
    url, studies = vlm_server
    reply = requests.post(f"{url}/infer/seer", params={"image": "mni152_t1", "output": "json"},
                          data={"params": json.dumps({"prompt": "left hippocampus"})}, timeout=300)
    assert reply.status_code == 200, reply.text
    params = reply.json()
    assert params["trace"]["reasoner"] == "qwen-vl"
    assert params["trace"]["format_valid"] is False
    assert params["target"]["name"] == "Hippocampus_L"
    assert params["latencies"]["reasoner"]["cache_hit"] is False
    again = requests.post(f"{url}/infer/seer", params={"image": "mni152_t1", "output": "json"},
                          data={"params": json.dumps({"prompt": "left hippocampus"})}, timeout=300).json()
    assert again["latencies"]["reasoner"]["cache_hit"] is True
    proposal = json.loads((studies / ".seer" / "traces.jsonl").read_text().splitlines()[-1])["proposal"]
    assert (np.asanyarray(nib.load(proposal).dataobj) > 0).sum() == params["voxels"]


def test_refusals_still_apply_to_vlm_answers(vlm_server):
    url, _ = vlm_server
    reply = requests.post(f"{url}/infer/seer", params={"image": "mni152_t1"},
                          data={"params": json.dumps({"prompt": "rt hip bone pls"})}, timeout=300)
    assert reply.status_code == 422 and "Out of region" in reply.json()["detail"]


def test_concurrent_server_requests_are_generated_together(vlm_server):
    """Off-loop serving lets concurrent requests reach the model at once; the generation worker batches them
    (reasoner_batch 4): while it generates the first, the others queue and go together."""
    url, _ = vlm_server
    prompts = ["right amygdala", "the brain", "left thalamus", "right caudate nucleus", "left putamen"]

    def infer(prompt):
        reply = requests.post(f"{url}/infer/seer", params={"image": "mni152_t1", "output": "json"},
                              data={"params": json.dumps({"prompt": prompt})}, timeout=300)
        assert reply.status_code == 200, reply.text
        return reply.json()["latencies"]["reasoner"]

    with ThreadPoolExecutor(len(prompts)) as pool:
        timings = list(pool.map(infer, prompts))
    assert all(t["cache_hit"] is False for t in timings)
    assert max(t["batch"] for t in timings) >= 2, timings

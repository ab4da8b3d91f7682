"""Hostile input against the real server, over a study folder and over a real Orthanc (DICOMweb): proxy escapes in
every encoding, path-like study ids, malformed and oversized label uploads, SQL-shaped and 10 kB client ids, and a
burst of 1,000 next-sample calls from one client. Each gets a 4xx with a sentence (the burst: no 5xx, no thread
or memory growth), and afterwards the labels, trace log, study state and PACS hold what they held before."""

from __future__ import annotations

import json
import shutil
import time

import psutil
import pytest
import requests
from hostile import (
    Hostile,
    client_ids,
    labels_for,
    next_sample_burst,
    path_ids,
    proxy_escapes,
    release_all,
    seg_with_segments,
    send,
    settle,
    state_digest,
    uploads,
)

from conftest import REPO, running_server

pytestmark = pytest.mark.slow


def _server_process(url: str) -> psutil.Process:
    """The process listening on the server's port (`main.py serve` may hand over to a child process)."""
    port = int(url.rsplit(":", 1)[1])
    for proc in psutil.process_iter(["cmdline"]):
        if str(port) not in (proc.info["cmdline"] or []):
            continue
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                return proc
        except psutil.Error:
            continue
    raise AssertionError(f"no server process listens on port {port}")


def _refused(reply, name: str) -> None:
    assert 400 <= reply.status <= 499, f"{name}: {reply.status} {reply.body[:300]!r}"
    assert len(reply.detail) > 20, f"{name}: no sentence: {reply.body[:300]!r}"


@pytest.fixture(scope="module")
def folder_server(tmp_path_factory, sample_data):
    root = tmp_path_factory.mktemp("hostile")
    studies = root / "studies"
    studies.mkdir()
    for name in ("mni152_t1.nii.gz", "colin27_t1.nii.gz"):
        shutil.copy(sample_data / name, studies / name)
    with running_server(studies, root / "server.log") as url:
        settle(url)
        yield url, studies, root


def test_path_like_ids_get_one_404_whether_or_not_the_file_exists(folder_server):
    url, studies, root = folder_server
    before = state_digest(studies, studies / ".seer")
    label = labels_for(studies / "mni152_t1.nii.gz")["good"]
    existing = [str(studies / "mni152_t1.nii.gz"), "/etc/passwd", "sample-data/mni152_t1.nii.gz",
                "../" * 8 + "etc/hostname"]
    missing = [str(studies / "nope.nii.gz"), "/etc/no-such-file", "sample-data/nope.nii.gz", "../" * 8 + "etc/nope"]
    replies: dict[str, set] = {}
    for kind, path, item in path_ids(existing, missing, label):
        reply = send(url, item)
        _refused(reply, item.name)
        replies.setdefault(kind, set()).add((reply.status, reply.detail.replace(path, "<id>")))
    for kind, answers in replies.items():
        assert len(answers) == 1, f"{kind}: a path that exists is answered differently from one that does not: {answers}"
    assert state_digest(studies, studies / ".seer") == before


def test_malformed_and_oversized_uploads_store_nothing(folder_server):
    url, studies, root = folder_server
    labels = labels_for(studies / "mni152_t1.nii.gz")
    before = state_digest(studies, studies / ".seer")
    items = uploads("mni152_t1", labels, seg_with_segments(10_000))
    for item in items:
        _refused(send(url, item), item.name)
    assert state_digest(studies, studies / ".seer") == before
    assert "Traceback" not in (root / "server.log").read_text()


def test_hostile_client_ids_and_a_burst_of_next_sample(folder_server):
    url, studies, root = folder_server
    before = state_digest(studies, studies / ".seer")
    for item in client_ids():
        _refused(send(url, item), item.name)
    assert state_digest(studies, studies / ".seer") == before
    process = _server_process(url)
    session = requests.Session()
    session.post(f"{url}/activelearning/seer", json={"client_id": "burst"}, timeout=60)  # warm
    threads, rss = process.num_threads(), process.memory_info().rss
    statuses, leased = next_sample_burst(session, url, "burst", 1000)
    time.sleep(1.0)
    assert set(statuses) <= {200, 429}, statuses
    assert process.num_threads() <= threads + 2, (threads, process.num_threads())
    assert process.memory_info().rss - rss < 64 << 20, (rss, process.memory_info().rss)
    release_all(session, url, "burst", leased)
    assert state_digest(studies, studies / ".seer") == before


# -- over a real Orthanc ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pacs_setup(tmp_path_factory):
    from pacs import Orthanc
    from test_dicomweb import OFFLINE, _ct_atlas, _j2k_uid, _series_files

    files = _series_files()
    root = tmp_path_factory.mktemp("hostile-pacs")
    pacs = Orthanc(root / "orthanc").start()
    try:
        pacs.upload(files)
        conf = {"atlases": _ct_atlas(root / "atlases"), "store_seg": "true"}
        env = {**OFFLINE, "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache")}
        with running_server(pacs.dicomweb, root / "server.log", conf, env=env) as url:
            yield url, pacs, _j2k_uid(files), root
    finally:
        pacs.stop()


def _pacs_instances(pacs) -> list[str]:
    return sorted(requests.get(f"{pacs.url}/instances", timeout=30).json())


def test_proxy_escapes_never_reach_the_pacs(pacs_setup):
    url, pacs, uid, root = pacs_setup
    instances = _pacs_instances(pacs)
    system = requests.get(f"{pacs.url}/system", timeout=10).json()
    for item in proxy_escapes():
        reply = send(url, item)
        _refused(reply, item.name)
        assert system["Name"].encode() not in reply.body and b"DicomAet" not in reply.body, item.name
    assert _pacs_instances(pacs) == instances
    # DICOMweb itself still passes
    studies = send(url, Hostile("QIDO studies", "GET", "/proxy/dicom/qido/studies"))
    assert studies.status == 200 and json.loads(studies.body)


def test_pacs_datastore_refuses_path_ids_and_hostile_uploads(pacs_setup, tmp_path):
    url, pacs, uid, root = pacs_setup
    image = tmp_path / "image.nii.gz"
    reply = requests.get(f"{url}/datastore/image", params={"image": uid}, timeout=300)
    assert reply.status_code == 200, reply.text
    image.write_bytes(reply.content)
    labels = labels_for(image)
    instances, segs = _pacs_instances(pacs), pacs.series_uids("SEG")
    cache = root / "cache"
    existing = [str(image), str(REPO / "README.md")]
    missing = [str(tmp_path / "nope.nii.gz"), "/etc/no-such-file"]
    for _kind, _path, item in path_ids(existing, missing, labels["good"]):
        _refused(send(url, item), item.name)
    for item in uploads(uid, labels, seg_with_segments(10_000)):
        _refused(send(url, item), item.name)
    assert _pacs_instances(pacs) == instances and pacs.series_uids("SEG") == segs
    assert not list(cache.rglob("labels/final/*")), "a hostile upload became a label in the cache"

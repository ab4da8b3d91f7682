"""SEER Label over a real Orthanc PACS (DICOMweb): offline start, OHIF's result format, DICOM SEG written from the
resolved target and read back as labels, the DICOMweb proxy, and the errors a viewer shows.

Orthanc comes from Debian's packages (`.ci/run` installs them); the CT series is ../shared/data/dicom-ct-series
(JPEG 2000 lossless), stored as it comes and as an uncompressed copy.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from pacs import Orthanc, orthanc_binary

from conftest import SHARED_DATA, missing_fixture, running_server

SERIES_DIR = SHARED_DATA / "dicom-ct-series"
OHIF_PARAMS = {"result_extension": ".nrrd", "result_dtype": "uint8", "result_compress": False,
               "restore_label_idx": False}
# any proxy use fails: nothing may be fetched from outside (MONAI Label's dcmqi download would go through it)
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def _series_files() -> list[Path]:
    if orthanc_binary() is None:
        missing_fixture("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)")
    files = sorted(SERIES_DIR.glob("*.dcm"))
    if not files:
        missing_fixture(f"the DICOM CT series is not available: {SERIES_DIR} is absent")
    return files


def _ct_atlas(folder: Path) -> Path:
    """An atlas folder holding the small abdominal CT (liver, spleen, kidneys ... with their names)."""
    source = SHARED_DATA / "ct-abdomen-small"
    if not (source / "image.nii.gz").exists():
        missing_fixture(f"real volumes not available: {source} is absent")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ct-abdomen-small").symlink_to(source)
    return folder


def _j2k_uid(files: list[Path]) -> str:
    import pydicom

    return str(pydicom.dcmread(str(files[0]), stop_before_pixels=True).SeriesInstanceUID)


def _box_seg(files: list[Path], name: str, folder: Path, break_references: bool = False) -> bytes:
    """A DICOM SEG (written by seer.pacs.dicom_seg) holding one box named `name` over the series in `files`; with
    `break_references` its source references point at instances that do not exist (an unreadable label)."""
    import pydicom
    import SimpleITK as sitk
    from pydicom.uid import generate_uid

    from seer.pacs.dicom_seg import write_seg

    series = folder / "series"
    series.mkdir(parents=True, exist_ok=True)
    for f in files:
        (series / f.name).write_bytes(f.read_bytes())
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    grid = reader.Execute()
    values = np.zeros(sitk.GetArrayViewFromImage(grid).shape, np.uint8)
    values[4:14, 180:300, 160:300] = 7
    label = sitk.GetImageFromArray(values)
    label.CopyInformation(grid)
    sitk.WriteImage(label, str(folder / "box.nii.gz"))
    write_seg(folder / "box.nii.gz", series, folder / "box.dcm", {7: name})
    ds = pydicom.dcmread(str(folder / "box.dcm"))
    if break_references:
        for item in ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence:
            item.ReferencedSOPInstanceUID = generate_uid()
        for frame in ds.PerFrameFunctionalGroupsSequence:
            for derivation in frame.DerivationImageSequence:
                for source in derivation.SourceImageSequence:
                    source.ReferencedSOPInstanceUID = generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def _uncompressed_files(pacs: Orthanc, series_uid: str, folder: Path) -> list[Path]:
    """The uncompressed copy's instances, fetched back from the PACS (for a SEG that references them)."""
    from dicomweb_client.api import DICOMwebClient

    client = DICOMwebClient(pacs.dicomweb)
    study = client.search_for_series(search_filters={"SeriesInstanceUID": series_uid})[0]["0020000D"]["Value"][0]
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, ds in enumerate(client.retrieve_series(study, series_uid)):
        out.append(folder / f"{i:03d}.dcm")
        ds.save_as(str(out[-1]))
    return out


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory):
    """Orthanc holding the series as JPEG 2000 (unlabelled, but with an unreadable SEG) and uncompressed
    (labelled by a SEG named 'liver'); SEER Label over it, started with every outside URL unreachable."""
    files = _series_files()
    root = tmp_path_factory.mktemp("pacs")
    pacs = Orthanc(root / "orthanc").start()
    try:
        pacs.upload(files)
        _, raw_uid = pacs.upload_uncompressed(files)
        raw_files = _uncompressed_files(pacs, raw_uid, root / "raw")
        seg = pacs.upload_bytes(_box_seg(raw_files, "liver", root / "seg-good"))
        pacs.upload_bytes(_box_seg(files, "spleen", root / "seg-broken", break_references=True))
        seg_uid = requests.get(f"{pacs.url}/series/{seg['ParentSeries']}", timeout=10).json()[
            "MainDicomTags"]["SeriesInstanceUID"]
        log = root / "server.log"
        conf = {"atlases": _ct_atlas(root / "atlases"), "store_seg": "true", "datastore_atlases": "false"}
        env = {**OFFLINE, "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(root / "cache")}
        with running_server(pacs.dicomweb, log, conf, env=env) as url:
            yield {"url": url, "pacs": pacs, "j2k": _j2k_uid(files), "raw": raw_uid, "seg": seg_uid, "log": log}
    finally:
        pacs.stop()


def _infer(url: str, image: str, params: dict, output: str = "image", timeout: float = 300) -> requests.Response:
    return requests.post(f"{url}/infer/seer", params={"image": image, "output": output},
                         files={"params": (None, json.dumps(params))}, timeout=timeout)


def test_server_starts_over_dicomweb_without_network(pacs_server):
    log = pacs_server["log"].read_text()
    assert "Application startup complete" in log
    assert "dcmqi-1.2.4" not in log and "Error processing URL" not in log  # no download was even tried
    studies = requests.get(f"{pacs_server['url']}/datastore/?output=all", timeout=30).json()
    info = requests.get(f"{pacs_server['url']}/info/", timeout=30).json()
    assert info["seer"]["pacs"]["store_seg"] is True
    assert info["seer"]["active_learning"]["studies"] == 2  # the two image series; SEG series are not studies
    assert isinstance(studies, dict)


def test_ohif_request_gets_raw_uint8_nrrd_valued_with_the_info_id(pacs_server, tmp_path):
    url = pacs_server["url"]
    reply = _infer(url, pacs_server["j2k"], {**OHIF_PARAMS, "prompt": "the liver pls"})
    assert reply.status_code == 200, reply.text
    import SimpleITK as sitk

    head = reply.content[:1000].split(b"\n\n")[0].decode()
    header = dict(line.split(": ", 1) for line in head.splitlines()[1:] if ": " in line)
    assert head.startswith("NRRD") and header["type"] == "unsigned char" and header["encoding"] == "raw"
    result = tmp_path / "result.nrrd"
    result.write_bytes(reply.content)
    values = sitk.GetArrayFromImage(sitk.ReadImage(str(result)))
    assert values.shape == (20, 512, 512)
    liver = requests.get(f"{url}/info/", timeout=30).json()["models"]["seer"]["labels"]["liver"]
    assert set(np.unique(values)) == {0, liver}
    assert (values == liver).sum() > 10_000


def test_unknown_series_is_404_and_a_seg_series_is_422(pacs_server):
    url = pacs_server["url"]
    reply = _infer(url, "1.2.3.4.5.6", {"prompt": "liver"})
    assert reply.status_code == 404
    assert "No series with SeriesInstanceUID '1.2.3.4.5.6'" in reply.json()["detail"]
    reply = _infer(url, pacs_server["seg"], {"prompt": "liver"})
    assert reply.status_code == 422
    assert "is a SEG series, not an image" in reply.json()["detail"]


def test_result_extension_the_writer_cannot_produce_is_422(pacs_server):
    reply = _infer(pacs_server["url"], pacs_server["j2k"], {"prompt": "liver", "result_extension": ".png"})
    assert reply.status_code == 422, reply.text
    assert ".png" in reply.json()["detail"]


def test_dicom_seg_output_is_named_and_coded_from_the_target_not_the_client(pacs_server):
    import pydicom

    reply = _infer(pacs_server["url"], pacs_server["j2k"],
                   {"prompt": "spleen please", "label_info": [{"name": "liver", "idx": 1}]}, output="dicom_seg")
    assert reply.status_code == 200, reply.text
    seg = pydicom.dcmread(io.BytesIO(reply.content))
    assert seg.Modality == "SEG" and len(seg.SegmentSequence) == 1
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "spleen"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "78961009"  # SNOMED CT: Spleen
    assert segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "123037004"
    assert seg.ContentDescription == "spleen please"
    assert reply.headers["X-SEER-Target"] == "spleen"


def test_seg_in_the_pacs_is_read_as_a_named_label_and_an_unreadable_one_is_skipped(pacs_server):
    url = pacs_server["url"]
    objects = requests.get(f"{url}/datastore/?output=all", timeout=30).json()["objects"]
    info = objects[pacs_server["raw"]]["labels"]["final"]["info"]
    assert info["label_names"] == {"liver": 1} and info["source"] == "pacs"
    assert "final" not in objects.get(pacs_server["j2k"], {}).get("labels", {})
    unreadable = requests.get(f"{url}/info/", timeout=30).json()["seer"]["pacs"]["unreadable_labels"]
    assert list(unreadable) == [pacs_server["j2k"]] and unreadable[pacs_server["j2k"]].startswith("SEG ")
    assert "is not readable and is skipped" in pacs_server["log"].read_text()


def test_proxy_forwards_accept_so_frames_arrive_as_stored(pacs_server):
    url, pacs = pacs_server["url"], pacs_server["pacs"]
    for uid, accept, check in (
        (pacs_server["j2k"], "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*",
         lambda body: b"\xff\x4f\xff\x51" in body),  # a JPEG 2000 codestream, untouched
        (pacs_server["raw"], "multipart/related; type=\"application/octet-stream\"; "
         "transfer-syntax=1.2.840.10008.1.2.1", lambda body: len(body) >= 512 * 512 * 2),
    ):
        series = requests.get(f"{pacs.dicomweb}/series", params={"SeriesInstanceUID": uid}, timeout=10).json()[0]
        study = series["0020000D"]["Value"][0]
        instances = requests.get(f"{url}/proxy/dicom/qido/studies/{study}/series/{uid}/instances", timeout=30)
        assert instances.status_code == 200, instances.text
        sop = instances.json()[0]["00080018"]["Value"][0]
        frame = requests.get(f"{url}/proxy/dicom/wado/studies/{study}/series/{uid}/instances/{sop}/frames/1",
                             headers={"Accept": accept}, timeout=30)
        assert frame.status_code == 200, frame.text[:300]
        assert frame.headers["content-type"].startswith("multipart/related")
        assert check(frame.content)


@pytest.fixture
def own_pacs(tmp_path):
    files = _series_files()
    pacs = Orthanc(tmp_path / "orthanc").start()
    try:
        pacs.upload(files)
        yield pacs, _j2k_uid(files)
    finally:
        pacs.stop()


def test_saved_label_is_stored_as_coded_seg_and_a_second_server_reads_it_as_an_atlas(own_pacs, tmp_path):
    import nibabel as nib
    import pydicom

    pacs, uid = own_pacs
    atlases = _ct_atlas(tmp_path / "atlases")
    conf = {"atlases": atlases, "store_seg": "true"}
    with running_server(pacs.dicomweb, tmp_path / "one.log", conf,
                        env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache-one")}) as url:
        reply = _infer(url, uid, {"prompt": "liver"})
        assert reply.status_code == 200, reply.text
        mask = tmp_path / "liver.nii.gz"
        mask.write_bytes(reply.content)
        # a value that names nothing here: refused before anything is saved or stored
        image = nib.load(str(mask))
        odd = tmp_path / "odd.nii.gz"
        nib.save(nib.Nifti1Image((np.asarray(image.dataobj) > 0).astype(np.uint16) * 999, image.affine), str(odd))
        refused = requests.put(f"{url}/datastore/label", params={"image": uid, "tag": "final"},
                               files={"label": odd.open("rb")}, timeout=60)
        assert refused.status_code == 422 and "999" in refused.json()["detail"]
        assert pacs.series_uids("SEG") == []
        # the mask holds the liver's id and, left unnamed, the spleen's: read as this server's ids, so calling the
        # liver's id "spleen" contradicts the table and is refused naming both; nothing is stored
        ids = requests.get(f"{url}/info/", timeout=60).json()["models"]["seer"]["labels"]
        values = np.asarray(image.dataobj)
        mixed_values = values.copy()
        mixed_values[:, : values.shape[1] // 2][values[:, : values.shape[1] // 2] > 0] = ids["spleen"]
        mixed = tmp_path / "mixed.nii.gz"
        nib.save(nib.Nifti1Image(mixed_values.astype(np.uint16), image.affine), str(mixed))
        contradicted = requests.put(f"{url}/datastore/label", params={"image": uid, "tag": "final"},
                                    files={"label": mixed.open("rb"), "params": (None, json.dumps(
                                        {"label_info": [{"name": "spleen", "idx": ids["liver"]}]}))}, timeout=120)
        assert contradicted.status_code == 422, contradicted.text
        assert "'spleen'" in contradicted.json()["detail"] and "'liver'" in contradicted.json()["detail"]
        assert pacs.series_uids("SEG") == []
        # the mask alone, unnamed: its value is the liver's id, so the table names it and the SEG says liver
        saved = requests.put(f"{url}/datastore/label", params={"image": uid, "tag": "final"},
                             files={"label": mask.open("rb")}, timeout=120)
        assert saved.status_code == 200, saved.text
    segs = pacs.series_uids("SEG")
    assert len(segs) == 1
    seg_file = tmp_path / "stored.dcm"
    found = requests.post(f"{pacs.url}/tools/find", json={"Level": "Instance", "Query": {"Modality": "SEG"}},
                          timeout=10).json()
    seg_file.write_bytes(requests.get(f"{pacs.url}/instances/{found[0]}/file", timeout=10).content)
    stored = pydicom.dcmread(str(seg_file))
    assert stored.SeriesDescription == "SEER final: liver"
    assert stored.ContentDescription == "liver"  # the SEER request that proposed it (the trace)
    segment = stored.SegmentSequence[0]
    assert segment.SegmentLabel == "liver"
    assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "10200004"  # SNOMED CT: Liver
    # a second server that never saw the save (empty cache) finds the SEG, reads it, and uses the study as an atlas
    with running_server(pacs.dicomweb, tmp_path / "two.log", conf,
                        env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache-two")}) as url:
        objects = requests.get(f"{url}/datastore/?output=all", timeout=30).json()["objects"]
        assert objects[uid]["labels"]["final"]["info"]["label_names"] == {"liver": 1}
        assert requests.get(f"{url}/info/", timeout=30).json()["seer"]["active_learning"]["labelled"] == 1
    log = (tmp_path / "two.log").read_text()
    assert "read from SEG" in log and "atlas backbone: 6 atlases" in log  # 4 sample atlases + CT + this study


def test_pacs_down_is_503_naming_it_while_cached_studies_keep_working(own_pacs, tmp_path):
    pacs, uid = own_pacs
    # two attempts per PACS request (one wait of 2 s) instead of the default five (30 s of waits) before the 503
    conf = {"atlases": _ct_atlas(tmp_path / "atlases"), "store_seg": "true", "dicomweb_retries": 2}
    with running_server(pacs.dicomweb, tmp_path / "server.log", conf,
                        env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}) as url:
        first = _infer(url, uid, {"prompt": "liver"})
        assert first.status_code == 200
        pacs.stop()
        # a final label saved while the PACS is down: 503 naming it, and the label is kept on the server
        mask = tmp_path / "liver.nii.gz"
        mask.write_bytes(first.content)
        with mask.open("rb") as f:
            saved = requests.put(f"{url}/datastore/label", params={"image": uid, "tag": "final"},
                                 files={"label": f}, timeout=120)
        assert saved.status_code == 503 and "label was saved on this server" in saved.json()["detail"]
        kept = requests.get(f"{url}/datastore/?output=all", timeout=30).json()["objects"][uid]["labels"]["final"]
        liver = requests.get(f"{url}/info/", timeout=30).json()["models"]["seer"]["labels"]["liver"]
        assert kept["info"]["pending_seg"] is True and kept["info"]["label_names"] == {"liver": liver}
        again = _infer(url, uid, {"prompt": "spleen"})
        assert again.status_code == 200, again.text
        down = _infer(url, "1.2.3.4.5.6", {"prompt": "liver"})
        assert down.status_code == 503
        assert pacs.dicomweb in down.json()["detail"]
        assert requests.get(f"{url}/datastore/?output=all", timeout=30).status_code == 200
        proxied = requests.get(f"{url}/proxy/dicom/qido/studies", timeout=30)
        assert proxied.status_code == 503 and pacs.dicomweb.rsplit("/", 1)[0] in proxied.json()["detail"]


def test_a_seg_stored_by_another_tool_rewards_the_proposal_on_its_study(own_pacs, tmp_path):
    """A proposal is made; later a SEG appears in the PACS (saved by another viewer or server); the next request
    notices it, reads it as the final label, and the proposal is rewarded against it."""
    import pydicom

    from seer.pacs.dicom_seg import write_seg

    pacs, uid = own_pacs
    conf = {"atlases": _ct_atlas(tmp_path / "atlases"), "dicomweb_cache_s": "0"}
    with running_server(pacs.dicomweb, tmp_path / "server.log", conf,
                        env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}) as url:
        reply = _infer(url, uid, {"prompt": "liver"})
        assert reply.status_code == 200, reply.text
        (tmp_path / "liver.nii.gz").write_bytes(reply.content)
        liver = requests.get(f"{url}/info/", timeout=30).json()["models"]["seer"]["labels"]["liver"]
        write_seg(tmp_path / "liver.nii.gz", SERIES_DIR, tmp_path / "other.dcm", {liver: "liver"})
        pacs.upload_bytes((tmp_path / "other.dcm").read_bytes())
        assert pydicom.dcmread(str(tmp_path / "other.dcm")).Modality == "SEG"
        assert _infer(url, uid, {"prompt": "spleen"}).status_code == 200  # the next request notices the label
        deadline = time.time() + 180
        while requests.get(f"{url}/info/", timeout=30).json()["seer"]["rewards"] < 1:
            assert time.time() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(1)
        traces = requests.get(f"{url}/seer/trace/{uid}", timeout=30).json()
        assert traces["count"] == 2
    rows = [json.loads(line) for line in (tmp_path / "cache").rglob("traces.jsonl").__next__().open()]
    rewards = [r for r in rows if r.get("type") == "reward"]
    assert rewards and rewards[0]["dice"] > 0.99  # the SEG holds exactly the liver proposal


def test_two_servers_on_one_pacs_and_one_postgresql_learn_as_one_behind_nginx(own_pacs, fresh_postgres, tmp_path):
    """docs/deployment.md as written: two servers, each with its own cache folder, on one Orthanc and one PostgreSQL,
    behind nginx with deploy/nginx-seer-label.conf (only its marked lines replaced). Both use the same label ids; A's
    reasoning shows on B; the viewer, the PACS proxy and inference go through nginx to both servers; a label saved
    through B rewards the proposals A made, from the masks in the database, once; both serve the same round."""
    import sqlalchemy
    from load_balancer import Nginx, nginx_binary

    if nginx_binary() is None:
        missing_fixture("nginx is not installed (apt-get install nginx-light)")
    pacs, uid = own_pacs
    conf = {"atlases": _ct_atlas(tmp_path / "atlases"), "state_db": fresh_postgres, "skill_round": 1}
    with running_server(pacs.dicomweb, tmp_path / "a.log", conf,
                        env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache-a")}) as a, \
            running_server(pacs.dicomweb, tmp_path / "b.log", conf,
                           env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache-b")}) as b, \
            Nginx(tmp_path / "nginx", [a, b]) as balancer:
        labels = [requests.get(f"{url}/info/", timeout=30).json()["models"]["seer"]["labels"] for url in (a, b)]
        assert labels[0] == labels[1] and len(set(labels[0].values())) == len(labels[0])  # one id per structure
        reply = _infer(a, uid, {"prompt": "liver"})
        assert reply.status_code == 200, reply.text
        trace_id = requests.get(f"{a}/seer/trace/{uid}", timeout=30).json()["traces"][0]["id"]
        on_b = requests.get(f"{b}/seer/trace/{uid}", timeout=30).json()
        assert on_b["count"] == 1 and on_b["traces"][0]["id"] == trace_id  # A's reasoning, read on B

        url = balancer.url  # the one address of the recipe
        viewer = requests.get(f"{url}/ohif/", timeout=30)
        assert viewer.status_code == 200 and "<html" in viewer.text.lower()
        found = requests.get(f"{url}/proxy/dicom/qido/studies", timeout=30)
        assert found.status_code == 200 and len(found.json()) == 1
        replies = [_infer(url, uid, {"prompt": p}) for p in ("spleen", "liver", "spleen", "liver")]
        assert [r.status_code for r in replies] == [200] * 4
        assert set(balancer.upstreams("/infer/")) == {a.split("//")[1], b.split("//")[1]}  # both did work

        for proposal in [p for p in (tmp_path / "cache-a").rglob("proposals/*") if p.is_file()]:
            proposal.unlink()  # B stands on another machine: A's proposal files are not there to read
        mask = tmp_path / "liver.nii.gz"
        mask.write_bytes(reply.content)
        with mask.open("rb") as f:
            saved = requests.put(f"{b}/datastore/label", params={"image": uid, "tag": "final"},
                                 files={"label": f}, timeout=120)
        assert saved.status_code == 200, saved.text
        deadline = time.time() + 180
        while requests.get(f"{b}/info/", timeout=30).json()["seer"]["rewards"] < 3:  # the three liver proposals
            assert time.time() < deadline, (tmp_path / "b.log").read_text()[-3000:]
            time.sleep(1)
        time.sleep(1.5)  # past the time a server trusts its round before asking the database again
        infos = [requests.get(f"{server}/info/", timeout=30).json()["seer"] for server in (a, b, url)]
        assert [i["rewards"] for i in infos] == [3, 3, 3]
        assert [i["round"] for i in infos] == [3, 3, 3]  # rounds of one reward, each closed once
        assert requests.get(f"{url}/seer/trace/{uid}", timeout=30).json()["count"] == 5
        assert not list((tmp_path / "cache-b").rglob("traces.jsonl"))  # everything went to the database
    engine = sqlalchemy.create_engine(fresh_postgres)
    with engine.connect() as conn:
        rewards = [json.loads(r[0]) for r in conn.exec_driver_sql(
            "SELECT body FROM seer_trace_rows WHERE kind = 'reward'")]
        rounds = [r[0] for r in conn.exec_driver_sql("SELECT round FROM seer_skill_rounds ORDER BY round")]
    engine.dispose()
    assert len(rewards) == 3 and len({r["trace_id"] for r in rewards}) == 3
    mine = next(r for r in rewards if r["trace_id"] == trace_id)
    assert mine["dice"] > 0.99  # A's proposal, read from the database: no file held it
    assert rounds == [0, 1, 2, 3]


def test_with_review_a_seg_reaches_the_pacs_only_once_a_read_is_approved(own_pacs, fresh_postgres, tmp_path):
    """review on with store_seg: a submitted read stays on the server that took it (awaiting review), no SEG in the
    PACS; a reviewer on a second server (same PostgreSQL) approves it from the mask kept in the database, which
    stores the SEG; the first server then reads that SEG as the study's label."""
    pacs, uid = own_pacs
    conf = {"atlases": _ct_atlas(tmp_path / "atlases"), "state_db": fresh_postgres, "store_seg": "true",
            "review": "true", "dicomweb_cache_s": "0"}
    with running_server(pacs.dicomweb, tmp_path / "a.log", conf,
                        env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache-a")}) as a, \
            running_server(pacs.dicomweb, tmp_path / "b.log", conf,
                           env={"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache-b")}) as b:
        reply = _infer(a, uid, {"prompt": "liver"})
        assert reply.status_code == 200, reply.text
        mask = tmp_path / "liver.nii.gz"
        mask.write_bytes(reply.content)
        saved = requests.put(f"{a}/datastore/label", params={"image": uid, "tag": "final"},
                             files={"label": mask.open("rb"), "params": (None, json.dumps({"client_id": "alice"}))},
                             timeout=120)
        assert saved.status_code == 200 and saved.json()["review"] == "submitted", saved.text
        assert pacs.series_uids("SEG") == []  # not before a reviewer approves it
        info = requests.get(f"{a}/datastore/label/info", params={"label": uid, "tag": "final"}, timeout=30).json()
        assert info["awaiting_review"] is True
        approved = requests.post(f"{b}/seer/review/{uid}", timeout=120, json={
            "annotator": "anonymous/alice", "decision": "approve", "client_id": "rev"})
        assert approved.status_code == 200 and approved.json()["state"] == "approved", approved.text
        (seg,) = pacs.series_uids("SEG")
        # the label as A serves it now (what Slicer downloads): the approved SEG, read from the PACS
        assert requests.get(f"{a}/datastore/label", params={"label": uid, "tag": "final"}, timeout=60).ok
        on_a = requests.get(f"{a}/datastore/?output=all", timeout=30).json()["objects"][uid]["labels"]["final"]
        assert on_a["info"]["SeriesInstanceUID"] == seg and "awaiting_review" not in on_a["info"]
        shown = requests.get(f"{a}/seer/review/{uid}", timeout=30).json()
        assert shown["teaches"] and shown["label_holds"] == "anonymous/alice"

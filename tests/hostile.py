"""Hostile input for a running SEER Label server, shared by tests/test_hostile_server.py and bench/bench_hostile.py:
proxy escapes in every encoding, path-like study ids, malformed and oversized label uploads, SQL-shaped and long
client ids. Requests go out through http.client with the path exactly as written (requests and urllib3 would
remove dot segments before sending). `state_digest` fingerprints what the inputs must leave untouched."""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import sqlite3
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import numpy as np


@dataclass
class Reply:
    status: int
    body: bytes

    @property
    def detail(self) -> str:
        try:
            value = json.loads(self.body).get("detail")
        except (ValueError, AttributeError):
            return ""
        return value if isinstance(value, str) else json.dumps(value)


@dataclass(frozen=True)
class Hostile:
    """One hostile request: what it tries (`name`), the method, the raw path (query included) and the body."""

    name: str
    method: str
    path: str
    body: bytes | None = None
    content_type: str | None = None


def send(url: str, item: Hostile, timeout: float = 120) -> Reply:
    """Send `item` to the server at `url` with its path byte for byte."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        headers = {"Content-Type": item.content_type} if item.content_type else {}
        conn.request(item.method, item.path, body=item.body, headers=headers)
        reply = conn.getresponse()
        return Reply(reply.status, reply.read())
    finally:
        conn.close()


ESCAPES = ("../system", "%2e%2e/system", "%2E%2E/system", ".%2e/system", "%2e./system", "%252e%252e/system",
           "..%2fsystem", "%2e%2e%2fsystem", "..%5csystem", "..\\system", "studies/../../system",
           "studies/%2e%2e/%2e%2e/system", "studies/..%2f..%2fsystem", "studies/%c0%ae%c0%ae/system", "system",
           "patients", "tools/find", "instances/../../system", "studies/..;/system", "studies/1.2/../../../system")


def proxy_escapes() -> list[Hostile]:
    """GETs that try to leave DICOMweb under every proxy root, and POSTs that try to write past STOW-RS."""
    items = [Hostile(f"GET /proxy/dicom/{root}{tail}", "GET", f"/proxy/dicom/{root}{tail}")
             for root in ("", "wado/", "qido/", "stow/") for tail in ESCAPES]
    dicm = bytes(128) + b"DICM"
    items += [Hostile(f"POST /proxy/dicom/{tail}", "POST", f"/proxy/dicom/{tail}", dicm, "application/dicom")
              for tail in ("../instances", "wado/%2e%2e/instances", "stow/..%2finstances", "instances",
                           "wado/studies/1.2/series", "%2e%2e/tools/find", "qido/../../tools/reset")]
    return items


def path_ids(existing: list[str], missing: list[str], label_file: bytes) -> list[tuple[str, str, Hostile]]:
    """(endpoint, path, request) triples naming a study by a file path, for paths that exist and paths that do not;
    each endpoint must answer both kinds alike."""
    out = []
    for path in [*existing, *missing]:
        q = quote(path, safe="")
        form, boundary = multipart({"params": ("", b"{}", None),
                                    "label": ("label.nii.gz", label_file, "application/gzip")})
        infer_body, infer_type = urlencoded({"params": '{"prompt": "brain"}'})
        out += [
            ("infer", path, Hostile(f"infer image={path}", "POST", f"/infer/seer?image={q}", infer_body, infer_type)),
            ("get image", path, Hostile(f"GET image={path}", "GET", f"/datastore/image?image={q}")),
            ("get label", path, Hostile(f"GET label={path}", "GET", f"/datastore/label?label={q}&tag=final")),
            ("save label", path, Hostile(f"PUT label image={path}", "PUT", f"/datastore/label?image={q}&tag=final",
                                         form, f"multipart/form-data; boundary={boundary}")),
            ("trace", path, Hostile(f"trace {path}", "GET", f"/seer/trace/{q}")),
        ]
    return out


def uploads(study: str, labels: dict[str, bytes], seg_10k: bytes) -> list[Hostile]:
    """PUT /datastore/label with bytes that must never become a label of `study` (`labels`: from `labels_for`)."""
    good_label, other_grid, big_value = labels["good"], labels["other_grid"], labels["big_value"]
    bomb = gzip.compress(bytes(200 << 20), compresslevel=1)  # 200 MB of zeros in about 200 kB
    nrrd = b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 10000 10000 10000\nencoding: raw\n\n" + bytes(4096)
    cases = [("truncated NIfTI", "label.nii.gz", good_label[: len(good_label) // 2], "{}", "final"),
             ("hello world", "label.nii.gz", b"hello world", "{}", "final"),
             ("gzip bomb", "label.nii.gz", bomb, "{}", "final"),
             ("NRRD of 10^12 voxels", "label.nrrd", nrrd, "{}", "final"),
             ("DICOM SEG of 10,000 segments", "label.dcm", seg_10k, "{}", "final"),
             ("label on another grid", "label.nii.gz", other_grid, "{}", "final"),
             ("value 70000", "label.nii.gz", big_value, "{}", "final"),
             ("tag that is a path", "label.nii.gz", good_label, "{}", "../../escape"),
             ("params not JSON", "label.nii.gz", good_label, "{oops", "final"),
             ("params not an object", "label.nii.gz", good_label, "[1, 2]", "final"),
             ("name contradicting the server's id", "label.nii.gz", labels["two_values"],
              json.dumps({"label_names": {"certainly not this": 1}}), "final")]
    out = []
    for name, filename, data, params, tag in cases:
        form, boundary = multipart({"params": ("", params.encode(), None),
                                    "label": (filename, data, "application/octet-stream")})
        out.append(Hostile(f"upload: {name}", "PUT", f"/datastore/label?image={quote(study)}&tag={quote(tag, safe='')}",
                           form, f"multipart/form-data; boundary={boundary}"))
    return out


def client_ids() -> list[Hostile]:
    """next-sample and release with client ids that are SQL-shaped, 10 kB long or hold control characters."""
    ids = ["x'; DROP TABLE seer_leases; --", "' OR '1'='1", "a" * 10_000, "ann\nsecond line", "ann\x00"]
    out = []
    for cid in ids:
        shown = cid if len(cid) < 40 else cid[:20] + f"... ({len(cid)} chars)"
        out.append(Hostile(f"next-sample client_id={shown!r}", "POST", "/activelearning/seer",
                           json.dumps({"client_id": cid}).encode(), "application/json"))
        if cid:
            out.append(Hostile(f"release client_id={shown!r}", "POST",
                               f"/activelearning/seer/release?image=x&client_id={quote(cid, safe='')}"))
    return out


def settle(url: str) -> None:
    """Wait until the server's background scoring is idle, so that only the hostile requests could change the
    state."""
    import requests

    for _ in range(240):
        if requests.get(f"{url}/info/", timeout=60).json()["seer"]["active_learning"]["scoring"].get("state") == "idle":
            return
        time.sleep(0.5)


def next_sample_burst(session, url: str, client: str, calls: int) -> tuple[dict[int, int], set[str]]:
    """`calls` next-sample requests from one client in a row: (replies by status, studies leased)."""
    statuses: dict[int, int] = {}
    leased: set[str] = set()
    for _ in range(calls):
        reply = session.post(f"{url}/activelearning/seer", json={"client_id": client}, timeout=60)
        statuses[reply.status_code] = statuses.get(reply.status_code, 0) + 1
        if reply.status_code == 200 and reply.json().get("id"):
            leased.add(reply.json()["id"])
    return statuses, leased


def release_all(session, url: str, client: str, studies: set[str]) -> None:
    for study in studies:
        session.post(f"{url}/activelearning/seer/release", params={"image": study, "client_id": client}, timeout=60)


def multipart(fields: dict[str, tuple[str, bytes, str | None]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    for field, (filename, data, content_type) in fields.items():
        out.write(f"--{boundary}\r\n".encode())
        disposition = f'form-data; name="{field}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"Content-Disposition: {disposition}\r\n".encode())
        if content_type:
            out.write(f"Content-Type: {content_type}\r\n".encode())
        out.write(b"\r\n" + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), boundary


def urlencoded(fields: dict[str, str]) -> tuple[bytes, str]:
    from urllib.parse import urlencode

    return urlencode(fields).encode(), "application/x-www-form-urlencoded"


def seg_with_segments(count: int) -> bytes:
    """A DICOM SEG header with `count` segments and no frames (a hostile upload, not a usable SEG)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "SEG"
    segments = []
    for number in range(1, count + 1):
        item = Dataset()
        item.SegmentNumber, item.SegmentLabel, item.SegmentAlgorithmType = number, f"segment {number}", "MANUAL"
        segments.append(item)
    ds.SegmentSequence = Sequence(segments)
    buffer = io.BytesIO()
    ds.save_as(buffer, write_like_original=False)  # pydicom 2, as MONAI Label 0.8.5 needs
    return buffer.getvalue()


def labels_for(image_path: Path) -> dict[str, bytes]:
    """Labels for the study at `image_path` (gzipped NIfTI bytes): `good` (value 1 on its grid), `other_grid` (one
    slice short), `big_value` (one voxel of 70000) and `two_values` (values 1 and 2)."""
    import nibabel as nib

    image = nib.load(str(image_path))
    shape, affine = image.shape[:3], image.affine
    voxels = np.asarray(image.dataobj)
    inside = (voxels > np.percentile(voxels, 60)).astype(np.uint8)
    big = np.zeros(shape, np.uint32)
    big[tuple(s // 2 for s in shape)] = 70000
    two = inside.copy()
    two[: shape[0] // 2] *= 2
    return {"good": nifti_bytes(inside, affine), "other_grid": nifti_bytes(inside[:-1], affine),
            "big_value": nifti_bytes(big, affine), "two_values": nifti_bytes(two, affine)}


def nifti_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    return gzip.compress(image.to_bytes(), compresslevel=1)


def state_digest(studies: Path, state_dir: Path, extra: dict | None = None) -> dict[str, str]:
    """What hostile input must leave as it was: every label file (hash), the trace log and its archives (size and
    hash), the state database's leases and labelled flags, and `extra` (e.g. the PACS's instance ids)."""
    out: dict[str, str] = {}
    for path in sorted((studies / "labels").rglob("*")) if (studies / "labels").exists() else []:
        if path.is_file():
            data = path.read_bytes()
            out[f"label {path.relative_to(studies)}"] = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    for path in sorted(state_dir.glob("trace*")):
        if path.is_file():
            data = path.read_bytes()
            out[f"trace {path.name}"] = f"{len(data)} {hashlib.sha256(data).hexdigest()}"
    db = state_dir / "state.db"
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            out["leases"] = json.dumps(conn.execute("SELECT study, client_id FROM seer_leases ORDER BY study").fetchall())
            out["labelled"] = json.dumps(conn.execute(
                "SELECT study, labelled FROM seer_studies ORDER BY study").fetchall())
    for key, value in (extra or {}).items():
        out[key] = json.dumps(value, sort_keys=True)
    return out


def changed_bytes(before: dict[str, str], after: dict[str, str]) -> int:
    """Bytes of state that differ: a changed file counts its larger size, a changed database row set or extra value
    its longer JSON; 0 when nothing changed."""
    def size(value: str) -> int:
        head = value.split(" ", 1)[0]
        return int(head) if head.isdigit() and " " in value else len(value)

    keys = set(before) | set(after)
    return sum(max(size(before.get(k, "")), size(after.get(k, ""))) for k in keys if before.get(k) != after.get(k))

"""MONAI Label's token auth switched on with `--conf auth_realm URL`: anonymous requests are refused, a token with
the user role may infer but not save labels, an annotator may save.

The identity provider (Keycloak in a real deployment) cannot run here; its one part MONAI Label calls, the realm
document holding the public key, is served as a static file by Python's http.server, and tokens are signed in the
test with the matching private key. Everything on the SEER side is the real server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import requests

from conftest import free_port, running_server

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def realm(tmp_path_factory):
    """(realm URL, sign(roles) -> bearer token) with the realm document served on 127.0.0.1."""
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    import base64

    folder = tmp_path_factory.mktemp("realm")
    (folder / "realms").mkdir()
    (folder / "realms" / "seer").write_text(json.dumps({"realm": "seer",
                                                          "public_key": base64.b64encode(public).decode()}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], cwd=folder,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/realms/seer"
    try:
        deadline = time.time() + 20
        while True:
            with contextlib.suppress(requests.RequestException):
                if requests.get(url, timeout=2).status_code == 200:
                    break
            if time.time() > deadline:
                pytest.fail("the realm document server did not start")
            time.sleep(0.1)

        def sign(*roles: str, user: str = "ann") -> dict:
            claims = {"preferred_username": user, "realm_access": {"roles": list(roles)},
                      "exp": int(time.time()) + 3600}
            return {"Authorization": f"Bearer {jwt.encode(claims, key, algorithm='RS256')}"}

        yield url, sign
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def test_auth_on_refuses_anonymous_and_applies_roles(realm, tmp_path, sample_data):
    url, sign = realm
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(sample_data / "mni152_t1.nii.gz", studies / "mni152_t1.nii.gz")
    user, annotator = sign("monailabel-user"), sign("monailabel-user", "monailabel-annotator")
    with running_server(studies, tmp_path / "server.log", {"auth_realm": url}, headers=user) as server:
        for method, path in (("get", "/info/"), ("post", "/infer/seer?image=mni152_t1"),
                             ("put", "/datastore/label?image=mni152_t1&tag=final"),
                             ("get", "/seer/trace/mni152_t1")):
            reply = requests.request(method, f"{server}{path}", timeout=30)
            assert reply.status_code == 401, (path, reply.status_code, reply.text)
        forged = {"Authorization": "Bearer " + "x" * 40}
        assert requests.get(f"{server}/info/", headers=forged, timeout=30).status_code == 401

        reply = requests.post(f"{server}/infer/seer", params={"image": "mni152_t1", "output": "image"}, headers=user,
                              data={"params": json.dumps({"prompt": "brain"})}, timeout=300)
        assert reply.status_code == 200, reply.text
        mask = tmp_path / "brain.nii.gz"
        mask.write_bytes(reply.content)

        def save(headers):
            with mask.open("rb") as f:
                return requests.put(f"{server}/datastore/label", params={"image": "mni152_t1", "tag": "final"},
                                    files={"label": f}, headers=headers, timeout=120)

        refused = save(user)
        assert refused.status_code == 403 and "monailabel-annotator" in refused.json()["detail"]
        saved = save(annotator)
        assert saved.status_code == 200, saved.text
        assert (saved.json()["annotator"], saved.json()["review"]) == ("ann", "approved")  # review off: on save
        # reviewing takes the reviewer role, and never one's own label
        body = {"annotator": "ann", "decision": "approve", "comment": "checked the cerebellum"}

        def review(headers):
            return requests.post(f"{server}/seer/review/mni152_t1", json=body, headers=headers, timeout=30)

        by_annotator = review(annotator)
        assert by_annotator.status_code == 403 and "monailabel-reviewer" in by_annotator.json()["detail"]
        own = review(sign("monailabel-user", "monailabel-reviewer"))  # the same user "ann"
        assert own.status_code == 403 and "their own label" in own.json()["detail"]
        other = review(sign("monailabel-user", "monailabel-reviewer", user="rev"))
        assert other.status_code == 200 and (other.json()["state"], other.json()["reviewer"]) == ("approved", "rev")
        # STOW-RS through the proxy writes into the PACS: the annotator role, like a save
        stow = requests.post(f"{server}/proxy/dicom/wado/studies", data=b"DICM", headers=user, timeout=30)
        assert stow.status_code == 403 and "monailabel-annotator" in stow.json()["detail"]


def test_a_lease_belongs_to_the_user_and_its_client_id(realm, tmp_path):
    """Auth on: a lease is held by the token's user narrowed by client_id. Another user with the same client_id, the
    same user with another client_id: 403; the same user without it: 422; an admin ends anyone's lease."""
    import nibabel as nib
    import numpy as np

    url, sign = realm
    studies = tmp_path / "studies"
    studies.mkdir()
    for name in ("one", "two"):
        nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.int16), np.eye(4)), str(studies / f"{name}.nii.gz"))
    ann, bob = sign("monailabel-user", user="ann"), sign("monailabel-user", user="bob")
    admin = sign("monailabel-user", "monailabel-admin", user="root")
    with running_server(studies, tmp_path / "server.log", {"auth_realm": url, "lease_s": 600}, headers=ann) as server:
        def release(headers, **params):
            return requests.post(f"{server}/activelearning/seer/release", params=params, headers=headers, timeout=30)

        got = requests.post(f"{server}/activelearning/seer", json={"client_id": "tab-1"}, headers=ann, timeout=60)
        assert got.status_code == 200, got.text
        study = got.json()["id"]
        assert got.json()["holder"] == "ann/tab-1"
        assert release(bob, image=study, client_id="tab-1").status_code == 403  # client_id never replaces the user
        assert release(ann, image=study, client_id="tab-2").status_code == 403
        missing = release(ann, image=study)
        assert missing.status_code == 422 and "client_id" in missing.json()["detail"]
        ended = release(admin, image=study)
        assert ended.status_code == 200 and ended.json()["released"] is True


def test_auth_realm_that_is_not_a_url_stops_serve_with_a_sentence(tmp_path):
    result = subprocess.run([sys.executable, "main.py", "serve", "--studies", str(tmp_path), "--conf", "auth_realm",
                             "keycloak"], capture_output=True, text=True, timeout=120,
                            cwd=os.path.dirname(os.path.dirname(__file__)))
    assert result.returncode == 2
    assert "Setting 'auth_realm' must be an http(s) URL" in result.stderr

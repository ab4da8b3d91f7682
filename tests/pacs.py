"""A real Orthanc PACS (Debian's `orthanc`, `orthanc-dicomweb`, `orthanc-gdcm`) for tests and benchmarks.

`Orthanc(folder).start()` writes a configuration into `folder` (storage there, HTTP on a free port of 127.0.0.1,
remote access and the DICOM port off, the DICOMweb plugin on; GDCM only when asked: the viewer gets frames as stored, see docs/pacs-and-ohif.md), starts
the server and waits for it; `stop()` ends it by PID. `upload(files)` stores DICOM files as they are;
`upload_uncompressed(files)` decodes them first (pydicom, JPEG 2000 through Pillow) and stores them
as Explicit VR Little Endian under new UIDs, so that one study exists in both encodings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PLUGINS = Path("/usr/share/orthanc/plugins")


def orthanc_binary() -> str | None:
    return shutil.which("Orthanc")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Orthanc:
    def __init__(self, folder: Path, gdcm: bool = False):
        self.folder = Path(folder)
        self.gdcm = gdcm
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.url}/dicom-web"

    def start(self, timeout_s: float = 60) -> Orthanc:
        import requests

        binary = orthanc_binary()
        if binary is None:
            raise RuntimeError("Orthanc is not installed (apt-get install orthanc orthanc-dicomweb orthanc-gdcm)")
        self.folder.mkdir(parents=True, exist_ok=True)
        plugins = [str(PLUGINS / "libOrthancDicomWeb.so")]
        if self.gdcm:
            plugins.append(str(PLUGINS / "libOrthancGdcm.so"))
        config = {
            "Name": "SEER-test", "StorageDirectory": str(self.folder / "db"), "IndexDirectory": str(self.folder / "db"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomServerEnabled": False,
            "Plugins": plugins, "StableAge": 1,
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True, "WadoRoot": "/wado",
                         "Host": "127.0.0.1", "Ssl": False},
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config, indent=1))
        with open(self.folder / "orthanc.log", "w") as log:
            self.proc = subprocess.Popen([binary, str(self.folder / "orthanc.json")], stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}: {self.log()[-2000:]}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return self
            if time.time() > deadline:
                self.stop()
                raise RuntimeError(f"Orthanc did not answer within {timeout_s:.0f} s: {self.log()[-2000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        path = self.folder / "orthanc.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None

    def upload(self, files) -> list[str]:
        """Store DICOM files as they are (POST /instances); returns the Orthanc ids of their series."""
        import requests

        series = []
        for path in files:
            reply = requests.post(f"{self.url}/instances", data=Path(path).read_bytes(), timeout=30)
            reply.raise_for_status()
            series.append(reply.json()["ParentSeries"])
        return sorted(set(series))

    def upload_bytes(self, data: bytes) -> dict:
        import requests

        reply = requests.post(f"{self.url}/instances", data=data, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def upload_uncompressed(self, files) -> tuple[str, str]:
        """Decode each file and store it uncompressed as a new study (new study, series and instance UIDs, so
        that a viewer opening the study sees this one series); returns (StudyInstanceUID, SeriesInstanceUID)."""
        import io

        import pydicom
        from pydicom.uid import ExplicitVRLittleEndian, generate_uid

        study_uid, series_uid = generate_uid(prefix=None), generate_uid(prefix=None)
        for path in files:
            ds = pydicom.dcmread(str(path))
            ds.decompress()
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.StudyInstanceUID = study_uid
            ds.SeriesInstanceUID = series_uid
            ds.SOPInstanceUID = generate_uid(prefix=None)
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.SeriesDescription = "uncompressed copy"
            buffer = io.BytesIO()
            ds.save_as(buffer, write_like_original=False)
            self.upload_bytes(buffer.getvalue())
        return str(study_uid), str(series_uid)

    def series_uids(self, modality: str | None = None) -> list[str]:
        import requests

        params = {"Modality": modality} if modality else {}
        rows = requests.get(f"{self.dicomweb}/series", params=params, timeout=10).json()
        return [row["0020000E"]["Value"][0] for row in rows]

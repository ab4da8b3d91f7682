"""Which paths the DICOMweb proxy may forward to the PACS, and which study ids name a DICOM series.

The proxy (`/proxy/dicom/...`) forwards a viewer's request with the server's PACS credentials, so only DICOMweb
resources may pass: the path below the WADO/QIDO/STOW prefix is read segment by segment against the DICOMweb
grammar (studies, series, instances, metadata, frames, rendered, thumbnail, bulk data; UIDs of digits and dots),
and anything else (a dot segment, encoded or not, a backslash, a percent sign left after decoding, an unknown
resource such as Orthanc's own `/system` or `/tools`) is refused before a URL is built. POST is DICOMweb's STOW-RS
only: `studies` or `studies/{uid}`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from seer.errors import SeerError

UID = re.compile(r"[0-9]+(\.[0-9]+)*")
UID_MAX = 64  # DICOM PS3.5: a UID is at most 64 characters
FRAME_LIST = re.compile(r"[1-9][0-9]{0,8}(,[1-9][0-9]{0,8})*")
BULK_SEGMENT = re.compile(r"[0-9A-Fa-f]{1,8}(,[0-9A-Fa-f]{1,8})*|[0-9]{1,9}")  # tag paths and item numbers
RENDERINGS = {"metadata", "rendered", "thumbnail"}
BULK_WORDS = {"bulk", "bulkdata"}


class NotDicomweb(SeerError):
    """A proxy path that is not a DICOMweb resource: 400, never forwarded."""

    status = 400


class MethodNotDicomweb(SeerError):
    """A POST to a DICOMweb resource that is not STOW-RS: 405."""

    status = 405


@dataclass(frozen=True)
class DicomwebPath:
    """A checked proxy path: `path` (segments joined by "/", safe to append to a prefix) and whether it is the
    STOW-RS resource (`studies` or `studies/{uid}`)."""

    path: str
    stow: bool


def is_uid(text: str) -> bool:
    """True for a DICOM UID: digits and single dots, at most 64 characters, no leading or trailing dot."""
    return isinstance(text, str) and 0 < len(text) <= UID_MAX and UID.fullmatch(text) is not None


def _refuse(path: str, why: str) -> NotDicomweb:
    shown = path if len(path) <= 120 else path[:117] + "..."
    return NotDicomweb(f"The proxy forwards DICOMweb resources only (studies/{{uid}}/series/{{uid}}/instances/{{uid}}"
                       f", metadata, frames, rendered, thumbnail, bulk data); '{shown}' is refused: {why}.")


def _instance_tail(segments: list[str], path: str) -> None:
    """What may follow studies/{uid}/series/{uid}/instances/{uid}."""
    if not segments:
        return
    head, rest = segments[0], segments[1:]
    if head in RENDERINGS and not rest:
        return
    if head == "frames" and rest and FRAME_LIST.fullmatch(rest[0]):
        if len(rest) == 1 or (len(rest) == 2 and rest[1] in ("rendered", "thumbnail")):
            return
        raise _refuse(path, f"'{'/'.join(rest[1:])}' cannot follow a frame list")
    if head in BULK_WORDS and rest and all(BULK_SEGMENT.fullmatch(s) for s in rest) and len(rest) <= 16:
        return
    raise _refuse(path, f"'{'/'.join(segments)}' is not an instance resource")


def _walk(segments: list[str], path: str) -> None:
    """studies[/{uid}[/metadata|rendered|thumbnail|series[/{uid}[/...|instances[/{uid}[/...]]]]|instances...]]]"""
    levels = ("studies", "series", "instances")
    if segments[0] not in levels:
        raise _refuse(path, f"'{segments[0]}' is not a DICOMweb resource (studies, series or instances)")
    level = levels.index(segments[0])
    position = 0
    while True:
        word = segments[position]
        if word != levels[level]:
            raise _refuse(path, f"'{word}' cannot follow '{segments[position - 1]}'")
        position += 1
        if position == len(segments):
            return  # a QIDO search at this level
        uid = segments[position]
        if not is_uid(uid):
            raise _refuse(path, f"'{uid[:70]}' is not a DICOM UID (digits and dots, at most 64 characters)")
        position += 1
        rest = segments[position:]
        if not rest:
            return
        if level == 2:
            return _instance_tail(rest, path)
        if rest[0] in RENDERINGS and len(rest) == 1:
            return
        # a study holds series (and, for QIDO, instances); a series holds instances
        level = 2 if rest[0] == "instances" else level + 1


def check_proxy_path(path: str, method: str = "GET") -> DicomwebPath:
    """The checked DicomwebPath for `path` (as the server received it, percent-decoded once); NotDicomweb (400) for
    anything that is not a DICOMweb resource, MethodNotDicomweb (405) for a POST that is not STOW-RS."""
    if not isinstance(path, str) or not path.strip("/"):
        raise _refuse(str(path), "it names no resource")
    for bad, why in (("\\", "a backslash"), ("%", "a percent-encoded character after decoding"),
                     ("\x00", "a NUL character")):
        if bad in path:
            raise _refuse(path, f"it holds {why}")
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise _refuse(path, "it holds a control character")
    segments = path.split("/")
    if segments and segments[-1] == "":
        segments = segments[:-1]  # one trailing slash is harmless
    if any(s in (".", "..") for s in segments):
        raise _refuse(path, "it holds a dot segment")
    if any(s == "" for s in segments):
        raise _refuse(path, "it holds an empty segment (//)")
    if len(segments) > 32:
        raise _refuse(path, "it is deeper than any DICOMweb resource")
    _walk(segments, path)
    stow = segments[0] == "studies" and len(segments) <= 2
    if method.upper() == "POST" and not stow:
        raise MethodNotDicomweb(f"POST through the proxy is DICOMweb's STOW-RS only (studies or studies/{{uid}}); "
                                f"'{path[:120]}' is read-only.")
    if method.upper() not in ("GET", "HEAD", "POST"):
        raise MethodNotDicomweb(f"The proxy answers GET and STOW-RS POST only, not {method.upper()}.")
    return DicomwebPath("/".join(segments), stow)

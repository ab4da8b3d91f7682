"""Errors a user can act on. Each carries the HTTP status the app answers with; the CLI exits with code 2."""

from __future__ import annotations


class SeerError(Exception):
    """Bad input or a request that cannot be carried out; `message` is one sentence meant for the user."""

    status = 422

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(SeerError):
    """The request text or a parameter is unusable (empty, nonsense, unknown option)."""


class RequestTooLarge(SeerError):
    """The request text is longer than the configured limit."""

    status = 413


class StudyNotFound(SeerError):
    """The image id or path names no study."""

    status = 404


class Forbidden(SeerError):
    """The user may not do this (a reviewer's own label, an annotator reviewing)."""

    status = 403


class Conflict(SeerError):
    """The request does not fit the current state (approving a draft)."""

    status = 409


class StateUnavailable(SeerError):
    """The shared state database (the `state_db` setting) cannot be reached; nothing was changed."""

    status = 503


class UnreadableVolume(SeerError):
    """The study exists but cannot be read as a 3D volume."""


class Refusal(SeerError):
    """The request was understood but the backbone cannot segment it (out of region, not in vocabulary, empty mask).

    `details` carries what the app logs and returns beside the message (trace, resolution kind, suggestions).
    """

    def __init__(self, message: str, kind: str = "refused", details: dict | None = None):
        super().__init__(message)
        self.kind = kind
        self.details = details or {}

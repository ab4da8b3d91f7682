"""MONAI Label's token auth, made to work with the PyJWT it installs.

monailabel 0.8.5 requires PyJWT >= 2.8 but decodes tokens without naming the signing algorithms, which PyJWT 2
refuses: with auth on, every token is rejected ("It is required that you pass in a value for the 'algorithms'
argument"). `install()` replaces its token reader (`monailabel.endpoints.user.auth.from_token`, looked up at each
request) with the same checks (signature against the realm's public key, expiry; audience not checked, as in
MONAI Label) and the algorithms named. An identity provider that cannot be reached is a 503 naming it, not a 500.
Roles stay MONAI Label's: `monailabel-user` may infer and read, `monailabel-annotator` may also save labels,
`monailabel-admin` may train and delete.
"""

from __future__ import annotations

import logging

import jwt
import requests
from fastapi import HTTPException
from monailabel.config import settings

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256"]  # asymmetric: the realm's public key


def _claim(payload: dict, path: str):
    value = payload
    for key in path.split("#"):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def install() -> None:
    from monailabel.endpoints.user import auth

    def from_token(token: str):
        if not settings.MONAI_LABEL_AUTH_ENABLE:
            return auth.DEFAULT_USER
        realm = settings.MONAI_LABEL_AUTH_REALM_URI
        try:
            key = auth.get_public_key(realm)
        except (requests.RequestException, KeyError, ValueError) as exc:
            raise HTTPException(503, f"The identity provider at {realm} cannot give its public key "
                                f"({type(exc).__name__}); tokens cannot be checked until it can.") from None
        payload = jwt.decode(token, key, algorithms=ALGORITHMS,
                             options={"verify_signature": True, "verify_aud": False, "verify_exp": True})
        roles = _claim(payload, settings.MONAI_LABEL_AUTH_TOKEN_ROLES) or []
        return auth.User(
            username=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_USERNAME),
            email=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_EMAIL),
            name=payload.get(settings.MONAI_LABEL_AUTH_TOKEN_NAME),
            roles=list(roles),
        )

    auth.from_token = from_token
    logger.info("token auth on: realm %s", settings.MONAI_LABEL_AUTH_REALM_URI)

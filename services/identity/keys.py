"""The provider's Ed25519 signing key: one PEM file, made on first start, never published."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import OKPKey

from shared.logging import get_logger

log = get_logger(__name__)

ALGORITHM = "Ed25519"


def load_or_create_signing_key(path: Path) -> OKPKey:
    """The key in ``path``, created (mode 0600) if missing; its kid is its RFC 7638 thumbprint."""
    if not path.exists():
        _create(path)
    pem = path.read_bytes()
    key = OKPKey.import_key(pem)
    if not key.is_private or not isinstance(key.private_key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return OKPKey.import_key(
        pem, parameters={"kid": key.thumbprint(), "alg": ALGORITHM, "use": "sig"}
    )


def _create(path: Path) -> None:
    """Write a new key atomically: two processes starting at once end up with the same key."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = OKPKey.generate_key("Ed25519", private=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=".signing-key-")  # 0600
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(key.as_pem(private=True))
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
            log.info("identity.signing_key_created", path=str(path))
    finally:
        os.unlink(temporary)

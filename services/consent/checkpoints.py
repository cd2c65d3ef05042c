"""Signed checkpoints of the ledger head, kept outside the database.

A checkpoint says "entry N had hash H", signed with an Ed25519 key the database never sees.
Someone who can rewrite the ledger table (a superuser) can recompute every hash after an edit,
so the chain alone would still verify; they cannot re-sign the checkpoints, and the next verify
finds the entry a checkpoint names with another hash (or gone). Checkpoints are files, one per
head, named so that they sort by sequence; ship the directory to write-once storage.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from services.consent.ledger import canonical, timestamp

LEDGER_NAME = "threadline.consent.ledger"


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_signing_key(path: Path, *, create: bool) -> Ed25519PrivateKey:
    """The checkpoint signing key; made (mode 0600) on first use where ``create`` allows."""
    if path.exists():
        key = load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 private key")
        return key
    if not create:
        raise FileNotFoundError(f"checkpoint signing key {path} does not exist")
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    try:
        os.link(temporary, path)  # another worker may have made it first: theirs is the key
    except FileExistsError:
        return load_or_create_signing_key(path, create=False)
    finally:
        temporary.unlink(missing_ok=True)
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A verification key from a PEM file holding either the public or the private key."""
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        private = load_pem_private_key(data, password=None)
        if not isinstance(private, Ed25519PrivateKey):
            raise ValueError(f"{path} does not hold an Ed25519 key")
        return private.public_key()
    public = load_pem_public_key(data)
    if not isinstance(public, Ed25519PublicKey):
        raise ValueError(f"{path} does not hold an Ed25519 public key")
    return public


@dataclass(frozen=True)
class Checkpoint:
    sequence: int
    hash: str
    signed_at: str
    key_id: str
    signature: str
    path: Path | None = None

    def body(self) -> dict[str, Any]:
        return {
            "ledger": LEDGER_NAME,
            "sequence": self.sequence,
            "hash": self.hash,
            "signed_at": self.signed_at,
            "key_id": self.key_id,
        }

    def verifies_with(self, public_key: Ed25519PublicKey) -> bool:
        try:
            public_key.verify(base64.b64decode(self.signature), canonical(self.body()))
        except (InvalidSignature, ValueError):
            return False
        return True


def sign(
    private_key: Ed25519PrivateKey, *, sequence: int, hash_: bytes, now: datetime
) -> Checkpoint:
    unsigned = Checkpoint(
        sequence=sequence,
        hash=hash_.hex(),
        signed_at=timestamp(now),
        key_id=key_id(private_key.public_key()),
        signature="",
    )
    signature = private_key.sign(canonical(unsigned.body()))
    return Checkpoint(
        sequence=unsigned.sequence,
        hash=unsigned.hash,
        signed_at=unsigned.signed_at,
        key_id=unsigned.key_id,
        signature=base64.b64encode(signature).decode("ascii"),
    )


def _file_name(sequence: int) -> str:
    return f"checkpoint-{sequence:015d}.json"


def write(directory: Path, checkpoint: Checkpoint) -> Path | None:
    """Write ``checkpoint`` unless one for that sequence exists; never overwrites."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / _file_name(checkpoint.sequence)
    content = json.dumps({**checkpoint.body(), "signature": checkpoint.signature}, indent=2)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(content + "\n")
    try:
        os.link(temporary, path)  # atomic and refuses to replace an existing checkpoint
    except FileExistsError:
        return None
    finally:
        temporary.unlink(missing_ok=True)
    return path


class CheckpointFileError(ValueError):
    pass


def read_all(directory: Path) -> list[Checkpoint]:
    """Every checkpoint file in ``directory``, by sequence."""
    if not directory.is_dir():
        return []
    found = []
    for path in sorted(directory.glob("checkpoint-*.json")):
        try:
            data = json.loads(path.read_text())
            found.append(
                Checkpoint(
                    sequence=int(data["sequence"]),
                    hash=str(data["hash"]),
                    signed_at=str(data["signed_at"]),
                    key_id=str(data["key_id"]),
                    signature=str(data["signature"]),
                    path=path,
                )
            )
        except (ValueError, KeyError, TypeError) as error:
            raise CheckpointFileError(f"{path} is not a checkpoint: {error}") from error
    return sorted(found, key=lambda checkpoint: checkpoint.sequence)

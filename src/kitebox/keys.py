"""Deploy-key generation: Ed25519 in OpenSSH format, produced in memory."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kitebox.core.secret import Secret


@dataclass(frozen=True)
class KeyPair:
    private: Secret
    public: str  # "ssh-ed25519 AAAA... comment"

    @property
    def fingerprint(self) -> str:
        """SHA256 fingerprint as `ssh-keygen -l` prints it."""
        blob = base64.b64decode(self.public.split()[1])
        return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_ed25519(comment: str) -> KeyPair:
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return KeyPair(Secret(private), f"{public.decode()} {comment}")

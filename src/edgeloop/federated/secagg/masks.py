"""Key agreement and mask expansion (Bonawitz et al. 2017, section 3).

- ``agree``: X25519 Diffie-Hellman, then HKDF-SHA256 with a purpose label, so the same key pair
  yields independent keys for pairwise masks and for encrypting shares.
- ``prg``: a 32-byte seed expanded into uint64 ring elements by AES-256 in counter mode (the
  keystream of a block cipher under a fresh key is a standard cryptographic PRG).
- ``seal`` / ``open_sealed``: AES-256-GCM for the Shamir shares a client relays through the
  server, bound to (sender, recipient) as associated data.
"""

from __future__ import annotations

import os

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from edgeloop.core.errors import UntrustedArtifactError
from edgeloop.federated.secagg.encoding import Ring

MASK_LABEL = b"edgeloop secagg pairwise mask"
SHARE_LABEL = b"edgeloop secagg share encryption"


def agree(private_key: bytes, peer_public: bytes, label: bytes) -> bytes:
    """A 32-byte key both parties derive: HKDF(X25519(sk_u, pk_v), info=label)."""
    shared = X25519PrivateKey.from_private_bytes(private_key).exchange(
        X25519PublicKey.from_public_bytes(peer_public)
    )
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(shared)


def prg(seed: bytes, length: int) -> Ring:
    """``length`` uniform uint64 values from a 32-byte seed (AES-256-CTR keystream)."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    stream = encryptor.update(bytes(8 * length)) + encryptor.finalize()
    return np.frombuffer(stream, dtype=np.uint64).copy()


def seal(key: bytes, plaintext: bytes, sender: int, recipient: int) -> bytes:
    """AES-256-GCM: 12-byte random nonce || ciphertext+tag."""
    nonce = os.urandom(12)
    aad = f"{sender}->{recipient}".encode()
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, sealed: bytes, sender: int, recipient: int) -> bytes:
    """Decrypt what ``seal`` produced.

    Raises:
        UntrustedArtifactError: the ciphertext was altered or not meant for this pair.
    """
    aad = f"{sender}->{recipient}".encode()
    try:
        return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)
    except InvalidTag as exc:
        raise UntrustedArtifactError(
            f"the key shares from client {sender} to {recipient} failed authentication",
            hint="the relay altered them; fail the round",
        ) from exc

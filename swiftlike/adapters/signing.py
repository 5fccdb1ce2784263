"""ed25519 signatures over an adapter's manifest. swiftlike.json holds the sha256 and size of every file, so a valid
signature over its exact bytes vouches for every file; the install re-hashes each file against it.

`swiftlike.sig` travels beside the manifest (it cannot be listed in the manifest it signs):
{"format": "swiftlike.signature/1", "algorithm": "ed25519", "publisher": NAME, "key_id": HEX16,
 "public_key": BASE64 (raw 32 bytes), "manifest_sha256": HEX, "signature": BASE64 (over the manifest bytes)}.
The public key inside is a hint only: trust comes from $SWIFTLIKE_HOME/trusted_keys/*.pub, matched by key id.
"""
from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from ..registry import SwiftlikeError

SIGNATURE = "swiftlike.sig"
SIG_FORMAT = "swiftlike.signature/1"
MAX_SIGNATURE_BYTES = 64 << 10


def key_id(raw_public: bytes) -> str:
    """The first 16 hex digits of the sha256 of the raw 32-byte public key (what lists and errors show)."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


@dataclass(frozen=True)
class Verdict:
    status: str  # "unsigned" | "trusted" | "untrusted" (valid, key not trusted) | "invalid"
    publisher: str | None = None  # the name in the signature (trusted: the trusted key's file name)
    key_id: str | None = None
    reason: str = ""  # why invalid / untrusted, one line

    @property
    def signed(self) -> bool:
        return self.status != "unsigned"

    def describe(self) -> str:
        if self.status == "unsigned":
            return "unsigned"
        who = f"{self.publisher or '?'} (key {self.key_id or '?'})"
        if self.status == "trusted":
            return f"signed by {who}, trusted"
        if self.status == "untrusted":
            return f"signed by {who}, NOT a trusted publisher"
        return f"BAD signature: {self.reason}"


def sign(manifest_bytes: bytes, private_key, publisher: str) -> bytes:
    """The signature file for `manifest_bytes`, made with an ed25519 private key object."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    doc = {"format": SIG_FORMAT, "algorithm": "ed25519", "publisher": publisher, "key_id": key_id(raw),
           "public_key": base64.b64encode(raw).decode(),
           "manifest_sha256": hashlib.sha256(manifest_bytes).hexdigest(),
           "signature": base64.b64encode(private_key.sign(manifest_bytes)).decode()}
    return (json.dumps(doc, indent=2) + "\n").encode()


def parse_signature(sig_bytes: bytes) -> dict:
    """The fields of a signature file, well-formed, or a SwiftlikeError saying what is wrong."""
    if len(sig_bytes) > MAX_SIGNATURE_BYTES:
        raise SwiftlikeError(f"{SIGNATURE}: {len(sig_bytes)} bytes, more than a signature can be")
    try:
        doc = json.loads(sig_bytes)
    except (ValueError, UnicodeDecodeError):
        raise SwiftlikeError(f"{SIGNATURE}: not valid JSON") from None
    if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT or doc.get("algorithm") != "ed25519":
        raise SwiftlikeError(f"{SIGNATURE}: not a {SIG_FORMAT} ed25519 signature")
    try:
        raw = base64.b64decode(doc.get("public_key", ""), validate=True)
        sig = base64.b64decode(doc.get("signature", ""), validate=True)
    except (ValueError, TypeError):
        raise SwiftlikeError(f"{SIGNATURE}: public_key/signature are not base64") from None
    if len(raw) != 32 or len(sig) != 64:
        raise SwiftlikeError(f"{SIGNATURE}: wrong key or signature length for ed25519")
    publisher = doc.get("publisher")
    if not isinstance(publisher, str) or not publisher or len(publisher) > 100 or not publisher.isprintable():
        raise SwiftlikeError(f"{SIGNATURE}: publisher must be a short printable name")
    return {**doc, "raw_public": raw, "raw_signature": sig}


def check_signature(manifest_bytes: bytes, sig_bytes: bytes | None, trusted: dict[str, bytes]) -> Verdict:
    """Verify `sig_bytes` over `manifest_bytes`. `trusted` maps publisher name -> raw public key (see
    trusted_keys()). A signature is checked with the trusted key of the same key id when there is one, else with
    the key it carries (to tell a valid-but-unknown publisher from a forgery)."""
    if sig_bytes is None:
        return Verdict("unsigned")
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        doc = parse_signature(sig_bytes)
    except SwiftlikeError as err:
        return Verdict("invalid", reason=str(err))
    raw = doc["raw_public"]
    kid = key_id(raw)
    by_id = {key_id(k): name for name, k in trusted.items()}
    publisher = by_id.get(kid, doc["publisher"])
    if doc.get("key_id") != kid:
        return Verdict("invalid", publisher, kid, "key_id does not match the public key")
    if doc.get("manifest_sha256") != hashlib.sha256(manifest_bytes).hexdigest():
        return Verdict("invalid", publisher, kid, "the manifest changed after it was signed (sha256 differs)")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(doc["raw_signature"], manifest_bytes)
    except InvalidSignature:
        return Verdict("invalid", publisher, kid, "the signature does not verify over the manifest")
    if kid in by_id:
        return Verdict("trusted", publisher, kid)
    return Verdict("untrusted", publisher, kid, f"key {kid} is not in the trusted keys")


TRUSTED_DIR = "trusted_keys"  # under $SWIFTLIKE_HOME: one NAME.pub (PEM public key) per trusted publisher


def load_public_key(data: bytes, where) -> bytes:
    """The raw 32-byte ed25519 key in a PEM (or OpenSSH) public key file."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key, \
        load_ssh_public_key

    try:
        key = load_ssh_public_key(data) if data.lstrip().startswith(b"ssh-") else load_pem_public_key(data)
    except (ValueError, TypeError):
        raise SwiftlikeError(f"{where}: not a PEM or OpenSSH public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SwiftlikeError(f"{where}: not an ed25519 key ({type(key).__name__})")
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def trusted_keys() -> dict[str, bytes]:
    """{publisher name: raw public key} of $SWIFTLIKE_HOME/trusted_keys/*.pub; an unreadable file is an error."""
    from ..paths import swiftlike_home

    folder = swiftlike_home() / TRUSTED_DIR
    if not folder.is_dir():
        return {}
    return {path.stem: load_public_key(path.read_bytes(), path) for path in sorted(folder.glob("*.pub"))}


# ---------------------------------------------------------------- signing a built artifact, checking a directory
def sign_directory(directory, key_name: str) -> dict:
    """Sign the swiftlike.json of the built artifact `directory` (its exact bytes, as they will be uploaded or
    packaged) with keys/KEY_NAME.key, writing swiftlike.sig beside it; returns {publisher, key_id}."""
    from pathlib import Path

    from ..checkpoint import MANIFEST, read_manifest_bytes
    from .keys import load_private_key

    directory = Path(directory)
    key = load_private_key(key_name)
    sig = sign(read_manifest_bytes(directory / MANIFEST), key, key_name)
    (directory / SIGNATURE).write_bytes(sig)
    doc = json.loads(sig)
    return {"publisher": doc["publisher"], "key_id": doc["key_id"]}


def read_signature(path) -> bytes | None:
    """The bytes of the signature file `path` (bounded), None when there is none."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return None
    if len(data) > MAX_SIGNATURE_BYTES:
        raise SwiftlikeError(f"{path}: more than a signature can be ({MAX_SIGNATURE_BYTES} bytes); refused")
    return data


def check_directory(directory, trusted: dict | None = None) -> Verdict:
    """The signature status of an adapter directory (its swiftlike.sig over its swiftlike.json) against the trusted
    keys (default: $SWIFTLIKE_HOME/trusted_keys)."""
    from pathlib import Path

    from ..checkpoint import MANIFEST, read_manifest_bytes

    directory = Path(directory)
    sig = read_signature(directory / SIGNATURE)
    if sig is None:
        return Verdict("unsigned")
    if not (directory / MANIFEST).is_file():
        return Verdict("invalid", reason=f"{SIGNATURE} without a {MANIFEST}")
    return check_signature(read_manifest_bytes(directory / MANIFEST), sig,
                           trusted_keys() if trusted is None else trusted)


def enforce(verdict: Verdict, *, require: bool) -> str | None:
    """Apply the signature policy: a bad signature is always refused (it is evidence of tampering); with `require`
    (--require-signature, or require_signature = true in config.toml) so are unsigned adapters and unknown
    publishers. Returns a one-line note for what passes with a caveat (a valid signature by an untrusted key)."""
    who = f"publisher {verdict.publisher or '?'}, key {verdict.key_id or '?'}"
    if verdict.status == "invalid":
        raise SwiftlikeError(f"bad signature ({who}): {verdict.reason}; refused (tampered or corrupted)")
    if require and verdict.status == "unsigned":
        raise SwiftlikeError(f"unsigned ({SIGNATURE} missing) and a signature is required (--require-signature or "
                             f"require_signature in config.toml); refused")
    if verdict.status == "untrusted":
        if require:
            raise SwiftlikeError(f"signed by an unknown publisher ({who}), and a trusted signature is required; "
                                 f"refused (if you trust it: `swiftlike adapter trust add THEIR_KEY.pub`)")
        return (f"note: signed by {verdict.publisher} (key {verdict.key_id}), not a trusted publisher (`swiftlike "
                f"adapter trust add THEIR_KEY.pub` once you know the key is theirs)")
    return None

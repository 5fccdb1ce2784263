"""Publisher keys: ed25519 pairs in $SWIFTLIKE_HOME/keys/ (`adapter keygen`, `push --sign`) and the trusted public
keys in $SWIFTLIKE_HOME/trusted_keys/ (`adapter trust add|list|remove`; signing.trusted_keys() reads them).

A private key is written 0600 into a 0700 directory, through a temp file linked into place, so it is never
half-written, never readable by others for an instant, and never overwritten unless asked (--force).
"""
from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..registry import SwiftlikeError
from .signing import TRUSTED_DIR, key_id, load_public_key

KEYS_DIR = "keys"  # under $SWIFTLIKE_HOME: NAME.key (PEM PKCS8, 0600) and NAME.pub (PEM) per key pair
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", re.ASCII)


def _home() -> Path:
    from ..paths import swiftlike_home

    return swiftlike_home()


def check_key_name(name, what: str = "key name") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SwiftlikeError(f"{what} {name!r}: use letters, digits, '.', '_' and '-' (at most 64, starting with a "
                             f"letter or digit)")
    return name


@dataclass(frozen=True)
class KeyInfo:
    name: str
    key_id: str
    path: Path  # the .pub file (keygen: the one to share; trust: the trusted copy)


def _write_new(path: Path, data: bytes, mode: int, force: bool) -> None:
    """Write `data` to `path` atomically with `mode` from the first byte; an existing file stays unless force."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have taken bits away from a public file
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails if the name exists: a concurrent keygen cannot clobber either
            except FileExistsError:
                raise SwiftlikeError(f"{path} exists; pass --force to replace it (signatures made with the old "
                                     f"key stop verifying against it)") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def keygen(name: str, *, force: bool = False) -> KeyInfo:
    """A new ed25519 pair as keys/NAME.key (private, 0600) and keys/NAME.pub; returns the public side's info."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

    check_key_name(name)
    folder = _home() / KEYS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    if not force and (private.exists() or public.exists()):
        raise SwiftlikeError(f"key {name!r} exists ({private}); pass --force to replace it, or choose another name")
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()
    raw = pub.public_bytes(Encoding.Raw, PublicFormat.Raw)
    _write_new(private, key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()), 0o600, force)
    _write_new(public, pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo), 0o644, True)
    return KeyInfo(name, key_id(raw), public)


def load_private_key(name: str):
    """The ed25519 private key keys/NAME.key; a missing, unreadable or group/world-readable one is an error."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    check_key_name(name, "--sign")
    path = _home() / KEYS_DIR / f"{name}.key"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SwiftlikeError(f"--sign {name}: no key {path}; make one with `swiftlike adapter keygen {name}`") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise SwiftlikeError(f"{path}: readable by others (mode {path.stat().st_mode & 0o777:o}); `chmod 600` it "
                             f"(and consider the key leaked)")
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SwiftlikeError(f"{path}: not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SwiftlikeError(f"{path}: not an ed25519 key")
    return key


# ---------------------------------------------------------------- trusted publishers
def trusted_dir() -> Path:
    return _home() / TRUSTED_DIR


def trust_add(file, *, name: str | None = None) -> KeyInfo:
    """Trust the ed25519 public key in `file` (PEM or OpenSSH) as publisher NAME (default: the file's stem)."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    file = Path(file)
    try:
        data = file.read_bytes()
    except OSError as err:
        raise SwiftlikeError(f"{file}: cannot read it ({err.strerror or err})") from None
    raw = load_public_key(data, file)
    name = check_key_name(file.stem if name is None else name, "--name")
    kid = key_id(raw)
    from .signing import trusted_keys

    for other, other_raw in trusted_keys().items():
        if other_raw == raw:
            if other == name:
                return KeyInfo(name, kid, trusted_dir() / f"{name}.pub")  # already trusted as that name
            raise SwiftlikeError(f"key {kid} is already trusted as {other!r}; `swiftlike adapter trust remove "
                                 f"{other}` first to rename it")
    dest = trusted_dir() / f"{name}.pub"
    if dest.exists():
        raise SwiftlikeError(f"a different key is already trusted as {name!r} ({dest}); pass --name OTHER, or "
                             f"`swiftlike adapter trust remove {name}` first")
    dest.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PublicKey.from_public_bytes(raw).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    _write_new(dest, pem, 0o644, False)
    return KeyInfo(name, kid, dest)


def trust_list() -> list[KeyInfo]:
    from .signing import trusted_keys

    return [KeyInfo(name, key_id(raw), trusted_dir() / f"{name}.pub") for name, raw in trusted_keys().items()]


def trust_remove(name: str) -> Path:
    path = trusted_dir() / f"{check_key_name(name)}.pub"
    try:
        path.unlink()
    except FileNotFoundError:
        known = ", ".join(k.name for k in trust_list()) or "none"
        raise SwiftlikeError(f"no trusted key named {name!r} (trusted: {known})") from None
    return path

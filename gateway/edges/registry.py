"""Identity registry (edge): config entries plus the key material they name.

Each identity is a SPIFFE URI carried as the single URI SAN of a client
certificate.  The registry says what it may do: which SenderCompIDs and
SenderSubIDs it may use, which network zones it may connect from, how its
messages are signed and with which keys (several during a rotation overlap),
whether it is a person who must pass MFA (and which people may), and
optional leaf pins.

Secret files (HMAC keys) must not be readable by group or others: the
gateway refuses to start otherwise, naming the file.
"""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.core.fix.signature import VerifyKey
from gateway.core.identity import ROUTING_FIELDS, Identity, ZoneTable, zone_entries
from gateway.edges.config import Config, ConfigError


def check_private_file(path: Path, what: str) -> None:
    """Refuse secrets that other users can read."""
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(path, what, f"cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(path, what, f"is readable by other users (mode {stat.filemode(mode)})",
                          f"chmod 600 {path}")


def _rfc3339(value: str, cfg_path: str, key: str) -> float:
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(cfg_path, key, f"{value!r} is not an RFC 3339 time", "e.g. 2026-12-31T00:00:00Z") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def load_key(scheme: str, path: Path, cfg_path: str, key: str) -> Ed25519PublicKey | bytes:
    if scheme == "ed25519":
        try:
            loaded = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise ConfigError(cfg_path, key, f"{path}: not a readable PEM public key ({exc})") from None
        if not isinstance(loaded, Ed25519PublicKey):
            raise ConfigError(cfg_path, key, f"{path}: is not an Ed25519 public key")
        return loaded
    check_private_file(path, key)
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(cfg_path, key, f"{path}: HMAC secret must be hex", "fixgw keys new writes one") from None
    if len(secret) < 32:
        raise ConfigError(cfg_path, key, f"{path}: HMAC secret is {len(secret)} bytes; at least 32 are required")
    return secret


def load_registry(cfg: Config) -> dict[str, Identity]:
    out: dict[str, Identity] = {}
    for i, ic in enumerate(cfg.identities):
        keys = []
        for j, kc in enumerate(ic.keys):
            where = f"identities[{i}].keys[{j}]"
            material = load_key(ic.signing, cfg.resolve(kc.path), cfg.path, where)
            until = _rfc3339(kc.valid_until, cfg.path, where + ".valid_until") if kc.valid_until else None
            keys.append(VerifyKey(ic.signing, material, until, kc.id or Path(kc.path).name))
        out[ic.id] = Identity(
            id=ic.id,
            comp_ids=frozenset(ic.comp_ids),
            sub_ids=frozenset(ic.sub_ids),
            zones=frozenset(ic.zones),
            roles=tuple(ic.roles),
            signing=ic.signing,
            keys=tuple(keys),
            max_bad_signatures=ic.max_bad_signatures,
            mfa=ic.mfa,
            pins=frozenset(p.lower().replace(":", "") for p in ic.pin_sha256),
            sign_outbound=ic.sign_outbound,
            routing={ROUTING_FIELDS[name]: frozenset(values) for name, values in ic.routing.items()},
            users=frozenset(ic.users),
        )
    return out


def zone_table(cfg: Config) -> ZoneTable:
    return zone_entries(cfg.zones)


def new_keys(scheme: str, out: Path) -> list[Path]:
    """Key material for a signing identity: ed25519 key pair or an HMAC secret."""
    out.parent.mkdir(parents=True, exist_ok=True)

    def private(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)

    if scheme == "ed25519":
        key = Ed25519PrivateKey.generate()
        priv = out.with_suffix(".key")
        pub = out.with_suffix(".pub")
        private(priv, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
        pub.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
        return [priv, pub]
    if scheme == "hmac-sha256":
        path = out.with_suffix(".hmac")
        private(path, os.urandom(32).hex().encode() + b"\n")
        return [path]
    raise ValueError(f"scheme {scheme!r}; valid: ed25519, hmac-sha256")

"""Second factor for human sessions (edge): password + TOTP at Logon (DESIGN §4).

Username(553) names the person; Password(554) is the account password
immediately followed by the current 6-digit TOTP code (RFC 6238, 30 s step,
±1 step of clock skew).

* passwords are stored as scrypt hashes in the users file
  (``scrypt$N$r$p$salt$hash``, base64);
* TOTP secrets live in a separate secrets file that must not be readable by
  group or others — the gateway refuses to start otherwise;
* each code is accepted once: the last used time step per user is kept, also
  across restarts (``state_dir/mfa-used.json``);
* an identity opens only for the people it names (``users``, checked by the
  guard before this module runs); failures within a window lock the person
  out *through that identity* for a configured time, never through another;
* with several workers (``shared``) used codes, failures and lockouts live in
  ``mfa-used.json`` / ``mfa-failures.json``, read and written under an
  exclusive lock at every check, so every worker counts the same;
* no password or code ever leaves this module: callers get a reason text
  that names what failed, never what was typed; a username that is not
  enrolled is shown only as a keyed hash (``MFA.shown``).
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import stat
import tomllib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyotp

from gateway.edges.config import ConfigError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
STEP = 30


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt_b, hash_b = stored.split("$")
        if scheme != "scrypt":
            return False
        salt, expected = base64.b64decode(salt_b), base64.b64decode(hash_b)
        digest = hashlib.scrypt(password.encode(), salt=salt, n=int(n), r=int(r), p=int(p), dklen=len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected)


def _read_toml(path: Path, what: str) -> dict[str, object]:
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(path, what, f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, what, f"not valid TOML: {exc}") from None


def check_secrets_file(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(path, "users.secrets", f"cannot read: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(path, "users.secrets",
                          f"TOTP secrets are readable by other users (mode {stat.filemode(mode)}); refusing to start",
                          f"chmod 600 {path}")


@dataclass
class _Account:
    password: str
    secret: str
    last_step: int = -1  # per person: a code is spent whichever identity it was typed into


@dataclass
class _Strikes:
    """Failures and lockout of one person through one identity."""

    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0


class MFA:
    """Password + TOTP of the people in the users file.

    Failures count, and lock, per (identity, person): the identity check runs
    first (``Guard.check_user``), so only attempts through an identity the
    person is bound to count at all, and failures through one of her
    identities never lock her out of another.  Used codes count per person.
    Names that are not enrolled are never written anywhere (``shown``): a
    username field is where people type their password by mistake."""

    def __init__(self, users_file: Path, secrets_file: Path, state_file: Path | None,
                 max_failures: int = 5, window: float = 300.0, lockout: float = 900.0,
                 shared: bool = False) -> None:
        check_secrets_file(secrets_file)
        users = _read_toml(users_file, "users.file").get("users", {})
        totp = _read_toml(secrets_file, "users.secrets").get("totp", {})
        if not isinstance(users, dict) or not isinstance(totp, dict):
            raise ConfigError(users_file, "users", "expected [users] and [totp] tables", "use fixgw users add")
        self.accounts: dict[str, _Account] = {}
        for name, entry in users.items():
            if not isinstance(entry, dict) or "password" not in entry:
                raise ConfigError(users_file, f"users.{name}.password", "missing")
            secret = totp.get(name)
            if not isinstance(secret, str):
                raise ConfigError(secrets_file, f"totp.{name}", "no TOTP secret for this user", "fixgw users add")
            self.accounts[name] = _Account(str(entry["password"]), secret)
        self.strikes: dict[tuple[str, str], _Strikes] = {}  # (identity, user) -> failures, lockout
        self.max_failures, self.window, self.lockout = max_failures, window, lockout
        self.state_file = state_file
        # several worker processes: used codes, failures and lockouts are read and written under a lock
        self.shared = shared
        self._tag_key = secrets.token_bytes(32)  # per process: tags correlate attempts, reveal nothing
        self._load_steps()

    def shown(self, username: str) -> str:
        """``username`` as logs and audit records may show it: verbatim when enrolled, otherwise
        "unknown user #<tag>" (a keyed hash: repeated attempts correlate within a run, the text
        itself — perhaps a password typed in the wrong field — is never written)."""
        if username in self.accounts:
            return username
        tag = hmac.new(self._tag_key, username.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()
        return f"unknown user #{tag[:12]}"

    def _load_steps(self) -> None:
        if self.state_file is not None and self.state_file.exists():
            used = json.loads(self.state_file.read_text() or "{}")
            for name, step in used.items():
                if name in self.accounts:
                    acct = self.accounts[name]
                    acct.last_step = max(acct.last_step, int(step))

    def _fail(self, strikes: _Strikes, now: float, reason: str) -> tuple[bool, str]:
        strikes.failures.append(now)
        while strikes.failures and strikes.failures[0] < now - self.window:
            strikes.failures.popleft()
        if len(strikes.failures) >= self.max_failures:
            strikes.locked_until = now + self.lockout
            strikes.failures.clear()
            return False, (f"{reason}; account locked through this identity for {self.lockout:.0f} s "
                           f"after {self.max_failures} failures")
        return False, reason

    def check(self, identity: str, username: str, password_field: str, now: float) -> tuple[bool, str]:
        """(accepted, reason) for ``username`` logging on through ``identity``. The reason names the
        failed factor, never the input (nor the username: the caller records ``shown(username)``).

        Shared (several workers): the used-code file is read and written under
        an exclusive lock, so a code accepted by one worker is refused by all."""
        if not self.shared or self.state_file is None:
            return self._check(identity, username, password_field, now)
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.state_file.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load_steps()
                self._load_failures(identity, username)
                result = self._check(identity, username, password_field, now)
                self._save_failures(identity, username)
                return result
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @property
    def _failures_file(self) -> Path:
        assert self.state_file is not None
        return self.state_file.with_name("mfa-failures.json")

    def _read_failures(self) -> dict[str, Any]:
        """Shared failures: ``{identity: {user: {"failures": [...], "locked_until": t}}}``."""
        try:
            data = json.loads(self._failures_file.read_text() or "{}")
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # unreadable: start counting again rather than refuse every logon
        return data if isinstance(data, dict) else {}

    def _load_failures(self, identity: str, username: str) -> None:
        """Shared: failures and lockout of ``username`` through ``identity`` as every worker counted them."""
        if username not in self.accounts:
            return
        per_identity = self._read_failures().get(identity)
        entry: Any = per_identity.get(username) if isinstance(per_identity, dict) else None
        if not isinstance(entry, dict):
            entry = {}
        times = entry.get("failures")
        until = entry.get("locked_until")
        self.strikes[(identity, username)] = _Strikes(
            deque(float(t) for t in (times if isinstance(times, list) else []) if isinstance(t, (int, float))),
            float(until) if isinstance(until, (int, float)) else 0.0)

    def _save_failures(self, identity: str, username: str) -> None:
        strikes = self.strikes.get((identity, username))
        if strikes is None:
            return
        data = self._read_failures()
        per_identity = data.get(identity)
        if not isinstance(per_identity, dict):
            per_identity = data[identity] = {}
        if strikes.failures or strikes.locked_until:
            per_identity[username] = {"failures": list(strikes.failures), "locked_until": strikes.locked_until}
        else:
            per_identity.pop(username, None)
            if not per_identity:
                data.pop(identity, None)
        tmp = self._failures_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._failures_file)

    def _check(self, identity: str, username: str, password_field: str, now: float) -> tuple[bool, str]:
        acct = self.accounts.get(username)
        if acct is None:
            return False, "unknown user"
        strikes = self.strikes.get((identity, username))
        if strikes is None:
            strikes = self.strikes[(identity, username)] = _Strikes()
        if now < strikes.locked_until:
            return False, f"account locked through this identity for {strikes.locked_until - now:.0f} s more"
        if len(password_field) < 7 or not password_field[-6:].isdigit():
            return self._fail(strikes, now, "Password(554) must be the password followed by a 6-digit TOTP code")
        password, code = password_field[:-6], password_field[-6:]
        if not check_password(password, acct.password):
            return self._fail(strikes, now, "wrong password")
        totp = pyotp.TOTP(acct.secret, interval=STEP)
        step = int(now // STEP)
        matched = next((s for s in (step, step - 1, step + 1)
                        if hmac.compare_digest(totp.at(s * STEP), code)), None)
        if matched is None:
            return self._fail(strikes, now, "wrong TOTP code")
        if matched <= acct.last_step:
            return self._fail(strikes, now, "TOTP code already used")
        acct.last_step = matched
        strikes.failures.clear()
        self._save()
        return True, "password and TOTP accepted"

    def _save(self) -> None:
        if self.state_file is None:
            return
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({n: a.last_step for n, a in self.accounts.items() if a.last_step >= 0}))
        os.replace(tmp, self.state_file)


def add_user(users_file: Path, secrets_file: Path, name: str, password: str) -> str:
    """Enrol ``name``: store the scrypt hash and a new TOTP secret; returns the otpauth:// URI."""
    users = _read_toml(users_file, "users.file") if users_file.exists() else {}
    totp = _read_toml(secrets_file, "users.secrets") if secrets_file.exists() else {}
    if secrets_file.exists():
        check_secrets_file(secrets_file)
    u = dict(users.get("users", {}))  # type: ignore[call-overload]
    t = dict(totp.get("totp", {}))  # type: ignore[call-overload]
    u[name] = {"password": hash_password(password)}
    secret = pyotp.random_base32()
    t[name] = secret
    users_file.parent.mkdir(parents=True, exist_ok=True)
    users_file.write_text("".join(f'[users.{json.dumps(n)}]\npassword = "{v["password"]}"\n\n' for n, v in u.items()))
    fd = os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("[totp]\n" + "".join(f"{json.dumps(n)} = {json.dumps(s)}\n" for n, s in t.items()))
    os.chmod(secrets_file, 0o600)
    return pyotp.TOTP(secret, interval=STEP).provisioning_uri(name=name, issuer_name="fixgw")

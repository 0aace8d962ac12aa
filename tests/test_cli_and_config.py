"""CLI and config: user mistakes get one precise line and exit 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from gateway.edges import pki
from gateway.edges.config import ConfigError, load
from tests.harness import ROOT


def fixgw(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_certs_init_is_idempotent_and_issue_makes_one_uri_san(tmp_path: Path) -> None:
    d = tmp_path / "pki"
    r1 = fixgw("certs", "init", "--dir", str(d))
    assert r1.returncode == 0 and "created" in r1.stdout
    ca_before = (d / "ca.crt").read_bytes()
    r2 = fixgw("certs", "init", "--dir", str(d))
    assert r2.returncode == 0 and "nothing to do" in r2.stdout
    assert (d / "ca.crt").read_bytes() == ca_before
    r3 = fixgw("certs", "issue", "--dir", str(d), "--name", "algo", "--comp-id", "A1", "--role", "trader")
    assert r3.returncode == 0
    assert 'comp_ids = ["A1"]' in r3.stdout and "spiffe://fixgw.dev/client/algo" in r3.stdout
    assert "PRIVATE KEY" not in r3.stdout
    cert = x509.load_pem_x509_certificate((d / "algo.crt").read_bytes())
    uris = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["spiffe://fixgw.dev/client/algo"]
    assert (d / "algo.key").stat().st_mode & 0o077 == 0
    gw = x509.load_pem_x509_certificate((d / "gateway.crt").read_bytes())
    san = gw.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)


def test_rsa_key_type_and_reissue_replaces(tmp_path: Path) -> None:
    pki.init(tmp_path)
    pki.issue(tmp_path, "q", key_type="rsa")
    first = (tmp_path / "q.crt").read_bytes()
    assert b"BEGIN CERTIFICATE" in first
    pki.issue(tmp_path, "q", key_type="rsa")
    assert (tmp_path / "q.crt").read_bytes() != first
    assert b"PRIVATE KEY" in (tmp_path / "q.key").read_bytes()


def test_issue_without_ca_says_how_to_create_one(tmp_path: Path) -> None:
    r = fixgw("certs", "issue", "--dir", str(tmp_path / "none"), "--name", "x")
    assert r.returncode == 2
    assert "fixgw certs init --dir" in r.stderr and "Traceback" not in r.stderr


def _write(tmp: Path, text: str) -> Path:
    p = tmp / "gw.toml"
    p.write_text(text)
    return p


BASE = """
[listen]
port = 9000
cert = "c"
key = "k"
ca = "a"
[audit]
dir = "audit"
[[sessions]]
begin_string = "FIX.4.4"
client_comp_id = "C"
gateway_comp_id = "G"
upstream = { host = "127.0.0.1", port = 9001, tls = false, sender_comp_id = "G", target_comp_id = "X" }
"""


@pytest.mark.parametrize(
    "mutate,key,words",
    [
        (lambda t: t.replace("port = 9000", 'port = "x"'), "listen.port", "Expected `int`"),
        (lambda t: t.replace("port = 9000", "port = 70000"), "listen.port", "1-65535"),
        (lambda t: t.replace('"FIX.4.4"', '"FIX.9.9"'), "sessions[0].begin_string", "valid: FIX.4.0"),
        (lambda t: t.replace("[audit]\ndir = \"audit\"", ""), "audit.dir", "names its audit folder"),
        (lambda t: t.replace("tls = false, ", ""), "sessions[0].upstream.ca", "CA bundle"),
        (lambda t: t.replace('dir = "audit"', 'dir = "audit"\ndurability = "fsync"\nwriter = "inline"'),
         "audit.writer", 'valid with durability = "fsync": "thread"'),
        (lambda t: t + "\n[gateway]\nbogus = 1\n", "gateway", "unknown field"),
        (lambda t: t + "\n[[identities]]\nid = \"spiffe://other/client/x\"\ncomp_ids = []\n",
         "identities[0].id", "trust domain"),
    ],
    ids=["type", "port-range", "begin-string", "audit-missing", "upstream-ca", "inline-fsync", "unknown-key",
         "trust-domain"],
)
def test_config_errors_name_file_key_and_what_is_valid(tmp_path: Path, mutate, key, words) -> None:  # type: ignore[no-untyped-def]
    p = _write(tmp_path, mutate(BASE))
    with pytest.raises(ConfigError) as exc:
        load(p)
    text = str(exc.value)
    assert str(p) in text and key in text and words.lower() in text.lower(), text


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path) -> None:
    cfg = load(_write(tmp_path, BASE))
    assert cfg.resolve("audit") == (tmp_path / "audit").resolve()


def test_cli_reports_config_error_without_traceback(tmp_path: Path) -> None:
    p = _write(tmp_path, BASE.replace("port = 9000", "port = -1"))
    r = fixgw("run", "--config", str(p))
    assert r.returncode == 2
    assert "listen.port" in r.stderr and "Traceback" not in r.stderr
    r = fixgw("run", "--config", str(tmp_path / "missing.toml"))
    assert r.returncode == 2 and "cannot read" in r.stderr


def test_missing_certificate_files_are_a_clear_error(tmp_path: Path) -> None:
    r = fixgw("run", "--config", str(_write(tmp_path, BASE)))
    assert r.returncode == 2 and "cannot read" in r.stderr and "Traceback" not in r.stderr


def test_audit_verify_detects_an_edited_record(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from gateway.edges.audit import AuditLog

    log = AuditLog(tmp_path / "a", Ed25519PrivateKey.generate())
    for i in range(5):
        log.record("decision", n=i)
    log.close()
    pub = ("--pubkey", str(tmp_path / "a" / "audit.pub"))
    assert fixgw("audit", "verify", str(tmp_path / "a"), *pub).returncode == 0
    path = tmp_path / "a" / "audit-000001.jsonl"
    path.write_text(path.read_text().replace('"n":2', '"n":3'))
    r = fixgw("audit", "verify", str(tmp_path / "a"), *pub)
    assert r.returncode == 1 and "record 4" in r.stdout and "hash mismatch" in r.stdout


def test_the_readme_configuration_example_is_valid(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    cfg = load(_write(tmp_path, block))
    assert cfg.sessions[0].upstream.port == 9881 and cfg.identities[0].comp_ids == ["ALGO1"]


def test_users_add_stores_a_hash_and_a_private_secret_and_prints_the_uri(tmp_path: Path) -> None:
    cfg = tmp_path / "u.toml"
    cfg.write_text('[users]\nfile = "users.toml"\nsecrets = "totp.secrets"\n')
    r = subprocess.run([sys.executable, "-m", "gateway", "users", "add", "alice", "--config", str(cfg),
                        "--password-stdin"], input="a long enough password\n", capture_output=True, text=True,
                       cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "otpauth://totp/fixgw:alice?secret=" in r.stdout
    users = (tmp_path / "users.toml").read_text()
    assert "scrypt$" in users and "a long enough password" not in users
    assert (tmp_path / "totp.secrets").stat().st_mode & 0o077 == 0
    short = subprocess.run([sys.executable, "-m", "gateway", "users", "add", "bob", "--config", str(cfg),
                            "--password-stdin"], input="short\n", capture_output=True, text=True, cwd=ROOT)
    assert short.returncode == 2 and "12 characters" in short.stderr


def test_policy_check_and_explain(tmp_path: Path) -> None:
    r = fixgw("policy", "check", "config/policy.toml")
    assert r.returncode == 0 and "15 rules" in r.stdout and "sha256" in r.stdout
    deny = fixgw("policy", "explain", "--policy", "config/policy.toml", "--role", "quant", "--action",
                 "rfq_analytics", "--zone", "dev_sandbox")
    assert deny.returncode == 1 and "quant-analytics-sandbox-deny" in deny.stdout
    allow = fixgw("policy", "explain", "--policy", "config/policy.toml", "--role", "quant", "--action",
                  "rfq_analytics", "--zone", "prod_analytics", "--ip", "127.0.0.12")
    assert allow.returncode == 0 and "ALLOW" in allow.stdout
    bad = tmp_path / "p.toml"
    bad.write_text('[[rules]]\nid = "x"\nactions = ["nope"]\ndecision = "allow"\n')
    r = fixgw("policy", "check", str(bad))
    assert r.returncode == 2 and "rule 'x'" in r.stderr and "unknown action 'nope'" in r.stderr


def test_kill_switch_and_jit_cli_write_the_watched_state_files(tmp_path: Path) -> None:
    import json as _json

    p = _write(tmp_path, BASE)
    r = fixgw("kill", "on", "--config", str(p), "--identity", "spiffe://fixgw.dev/client/a", "--account", "ACC")
    assert r.returncode == 0
    state = _json.loads((tmp_path / "state" / "killswitch.json").read_text())
    assert state["identities"] == ["spiffe://fixgw.dev/client/a"] and state["accounts"] == ["ACC"]
    fixgw("kill", "off", "--config", str(p), "--identity", "spiffe://fixgw.dev/client/a")
    assert _json.loads((tmp_path / "state" / "killswitch.json").read_text())["identities"] == []
    assert fixgw("kill", "on", "--config", str(p)).returncode == 2
    grant = fixgw("jit", "grant", "spiffe://fixgw.dev/client/a", "--minutes", "30", "--config", str(p))
    assert grant.returncode == 2 and "second administrator" in grant.stderr  # two-person: fixgw admin jit
    assert not (tmp_path / "state" / "jit.json").exists()
    too_long = fixgw("jit", "break-glass", "x", "--minutes", "100000", "--reason", "r", "--config", str(p))
    assert too_long.returncode == 2 and "jit_max_minutes" in too_long.stderr


def test_policy_test_runs_the_shipped_cases_and_fails_on_a_wrong_expectation(tmp_path: Path) -> None:
    ok = fixgw("policy", "test", "config/policy-tests.toml")
    assert ok.returncode == 0, ok.stdout
    assert "13/13 cases pass" in ok.stdout
    bad = tmp_path / "cases.toml"
    bad.write_text(f'policy = "{ROOT / "config" / "policy.toml"}"\n[[cases]]\nname = "wrong"\nroles = ["quant"]\n'
                   'action = "rfq_analytics"\nzone = "dev_sandbox"\nexpect = "allow"\n')
    r = fixgw("policy", "test", str(bad))
    assert r.returncode == 1 and "FAIL wrong" in r.stdout and "0/1" in r.stdout


def test_signed_policy_is_required_when_a_signer_key_is_configured(tmp_path: Path) -> None:
    from gateway.edges.policy_file import load as load_policy
    from gateway.edges.policy_file import sign
    from gateway.edges.registry import new_keys

    new_keys("ed25519", tmp_path / "admin")
    policy = tmp_path / "policy.toml"
    policy.write_bytes((ROOT / "config" / "policy.toml").read_bytes())
    r = fixgw("policy", "sign", str(policy), "--key", str(tmp_path / "admin.key"))
    assert r.returncode == 0 and (tmp_path / "policy.toml.sig").exists()
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_pem_public_key((tmp_path / "admin.pub").read_bytes())
    load_policy(policy, pub)  # type: ignore[arg-type]
    policy.write_text(policy.read_text() + "\n# drift\n")
    with pytest.raises(ConfigError, match="does not verify"):
        load_policy(policy, pub)  # type: ignore[arg-type]
    (tmp_path / "policy.toml.sig").unlink()
    with pytest.raises(ConfigError, match="missing"):
        load_policy(policy, pub)  # type: ignore[arg-type]
    assert sign  # the CLI above used it


def test_bad_cli_input_gets_one_precise_line_and_exit_2(tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text(f'policy = "{ROOT / "config" / "policy.toml"}"\n[[cases]]\nname = "z"\nroles = ["trader"]\n'
                     'action = "nope"\nexpect = "deny"\n')
    probes = [
        (["audit", "verify", str(ROOT), "--pubkey", str(tmp_path / "missing.pub")], "No such file"),
        (["audit", "verify", str(ROOT), "--pubkey", str(ROOT / "README.md")], "not a PEM public key"),
        (["policy", "test", str(cases)], "unknown action 'nope'"),
        (["policy", "explain", "--policy", "config/policy.toml", "--role", "trader", "--action", "create_rfq",
          "--field", "bad"], "expected TAG=VALUE"),
        (["policy", "sign", "config/policy.toml", "--key", str(ROOT / "README.md")], "not an Ed25519 private key"),
        (["audit", "query", str(ROOT), "--key", str(tmp_path / "missing.aes")], "No such file"),
        (["keys", "new", "--scheme", "ed25519", "--out", "/proc/nope/x"], "No such file"),
    ]
    for args, words in probes:
        r = fixgw(*args)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)

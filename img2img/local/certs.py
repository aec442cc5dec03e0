"""Certificates for the local control plane, as envtest makes them: one CA, a serving cert, client certs per user.

ECDSA P-256 keys: quick to generate, accepted by kube-apiserver for serving, client auth and service-account tokens.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=365)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attrs)


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path


def _write(folder: Path, stem: str, cert: x509.Certificate, key) -> Pair:
    pair = Pair(folder / f"{stem}.crt", folder / f"{stem}.key")
    pair.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pair.key.write_bytes(_pem_key(key))
    pair.key.chmod(0o600)
    return pair


def _issue(ca_cert, ca_key, subject: x509.Name, key, *, server_names: list[str] = (), client: bool = False):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for name in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                sans.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class ControlPlaneCerts:
    ca: Pair
    serving: Pair
    service_account: Pair  # signing key pair for service-account tokens
    admin: Pair  # system:masters
    controller_manager: Pair  # system:kube-controller-manager


def make_certs(folder: Path) -> ControlPlaneCerts:
    """Write a fresh CA and every cert the stack needs into `folder` (idempotent: reuses what is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "controller-manager.crt").exists():
        return _pairs(folder)
    ca_key = _key()
    now = dt.datetime.now(dt.timezone.utc)
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("img2img-local-ca", "img2img-operator"))
        .issuer_name(_name("img2img-local-ca", "img2img-operator"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder, "ca", ca_cert, ca_key)
    serving_key = _key()
    names = ["localhost", "127.0.0.1", "10.0.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    _write(folder, "serving", _issue(ca_cert, ca_key, _name("kube-apiserver"), serving_key, server_names=names), serving_key)
    sa_key = _key()
    (folder / "service-account.key").write_bytes(_pem_key(sa_key))
    (folder / "service-account.pub").write_bytes(
        sa_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for stem, user, group in (
        ("admin", "admin", "system:masters"),
        ("controller-manager", "system:kube-controller-manager", None),
    ):
        key = _key()
        _write(folder, stem, _issue(ca_cert, ca_key, _name(user, group), key, client=True), key)
    return _pairs(folder)


def _pairs(folder: Path) -> ControlPlaneCerts:
    return ControlPlaneCerts(
        ca=Pair(folder / "ca.crt", folder / "ca.key"),
        serving=Pair(folder / "serving.crt", folder / "serving.key"),
        service_account=Pair(folder / "service-account.pub", folder / "service-account.key"),
        admin=Pair(folder / "admin.crt", folder / "admin.key"),
        controller_manager=Pair(folder / "controller-manager.crt", folder / "controller-manager.key"),
    )


def kubeconfig(server: str, ca: Path, client: Pair, user: str) -> str:
    """A kubeconfig that embeds file paths (not data), so it stays readable and small."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: img2img-local
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {client.cert}
    client-key: {client.key}
contexts:
- name: img2img-local
  context:
    cluster: img2img-local
    user: {user}
    namespace: default
current-context: img2img-local
"""

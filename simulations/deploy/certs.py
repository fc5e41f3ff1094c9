"""Private CA + SuperLink server certificate with Python ``cryptography`` (the fallback of ``make_certs.sh``
where ``openssl`` is missing; same files, same SANs).

    python -m simulations.deploy.certs OUT_DIR [EXTRA_SAN ...]

Writes ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key`` (keys mode 600). The SANs always include
``localhost``, ``127.0.0.1`` and ``::1`` (the SuperLink's own SuperExec and ServerApp processes reach its Runtime API
over loopback), plus every extra host name or IP address given. An existing CA is reused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in ["localhost", "127.0.0.1", "::1", *names]:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    os.chmod(path, 0o600)


def make_certs(out: str | Path, extra_sans: list[str] | None = None, days: int = 365) -> dict[str, Path]:
    """Create (or reuse) the CA and issue a fresh server certificate; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key_path, ca_crt_path = out / "ca.key", out / "ca.crt"
    if ca_key_path.exists() and ca_crt_path.exists():
        ca_key = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        ca_crt = x509.load_pem_x509_certificate(ca_crt_path.read_bytes())
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "TreeLoRA-Fed private CA")])
        ca_crt = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(ca_key, ca_key_path)
        ca_crt_path.write_bytes(ca_crt.public_bytes(serialization.Encoding.PEM))
    key = ec.generate_private_key(ec.SECP256R1())
    names = list(extra_sans or [])
    crt = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "localhost")]))
        .issuer_name(ca_crt.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(names), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(key, out / "server.key")
    (out / "server.crt").write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    return {"ca": ca_crt_path, "cert": out / "server.crt", "key": out / "server.key"}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    paths = make_certs(argv[0], argv[1:], days=int(os.environ.get("CERT_DAYS", "365")))
    print(f"CA:     {paths['ca']}   (give this to every SuperNode and to the flwr CLI)")
    print(f"server: {paths['cert']} + {paths['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

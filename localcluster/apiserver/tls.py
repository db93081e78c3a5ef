"""A throw-away self-signed certificate for the API server's TCP listener.

kubectl (client-go) never sends a bearer token over plain HTTP (kubernetes/kubectl#744), so a
token-protected server must speak TLS. The certificate is made per server start with the
``openssl`` CLI (no Python crypto dependency), valid for 127.0.0.1/localhost (and the addresses it is published at), and its
PEM goes into the kubeconfig as the cluster's certificate authority.
"""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCertificate:
    cert_pem: bytes
    context: ssl.SSLContext


def self_signed_certificate(
    common_name: str = "rolltrace-apiserver", extra_addresses: tuple[str, ...] = ()
) -> ServerCertificate:
    """``extra_addresses``: more IP addresses the server is reached at (its listeners inside
    emulated networks)."""
    alt_names = ",".join(["IP:127.0.0.1", "DNS:localhost", *(f"IP:{a}" for a in extra_addresses)])
    with tempfile.TemporaryDirectory(prefix="rolltrace-tls-") as tmp:
        cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "365", "-subj", f"/CN={common_name}",
                "-addext", f"subjectAltName={alt_names}",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-keyout", str(key), "-out", str(cert),
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )  # fmt: skip
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        return ServerCertificate(cert.read_bytes(), context)


def client_context(ca_pem: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca_pem.decode())

"""Test certificates made with the openssl command line (a CA, leaf certificates that
it signs): tests of the TLS listeners need real files, as operators would give."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

OPENSSL_TIMEOUT_S = 30
VALID_DAYS = 2
_CURVE = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True,
                   timeout=OPENSSL_TIMEOUT_S)  # fmt: skip


@dataclass(frozen=True)
class Leaf:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path

    def serial(self) -> int:
        out = subprocess.run(["openssl", "x509", "-in", str(self.cert), "-noout", "-serial"],
                             check=True, capture_output=True, text=True,
                             timeout=OPENSSL_TIMEOUT_S).stdout  # fmt: skip
        return int(out.strip().split("=", 1)[1], 16)


@dataclass(frozen=True)
class Authority:
    """A throw-away CA in ``directory``."""

    directory: Path
    name: str = "ca"

    @property
    def cert(self) -> Path:
        return self.directory / f"{self.name}.pem"

    @classmethod
    def create(cls, directory: Path, name: str = "ca") -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        subject = f"/CN=synod-test-{name}"
        _openssl("req", "-x509", *_CURVE, "-keyout", f"{name}.key", "-out", f"{name}.pem",
                 "-days", str(VALID_DAYS), "-subj", subject, cwd=directory)  # fmt: skip
        return cls(directory, name)

    def issue(self, name: str, sans: tuple[str, ...] = ("IP:127.0.0.1", "DNS:localhost"),
              client: bool = False) -> Leaf:  # fmt: skip
        """A leaf certificate for ``sans`` (a server's; ``client`` for client auth)."""
        d = self.directory
        usage = "clientAuth" if client else "serverAuth,clientAuth"
        (d / f"{name}.ext").write_text(
            f"subjectAltName={','.join(sans)}\nextendedKeyUsage={usage}\n"
        )
        _openssl("req", *_CURVE, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", self.cert.name,
                 "-CAkey", f"{self.name}.key", "-CAcreateserial", "-out", f"{name}.pem",
                 "-days", str(VALID_DAYS), "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
        return Leaf(d / f"{name}.pem", d / f"{name}.key")

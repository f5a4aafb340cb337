"""TLS trust inside the jail when interception can happen (DESIGN.md section 6): boundary's CA
(created on first use, key 0600 in the hidden state dir) merged with the system roots and the
extra roots the caller already trusts (the files its CA variables name), exported through every
CA variable tools read; nsjail also binds the bundle over the distro bundle paths, for tools
that ignore the variables.

Side effects: creates the CA (mitmproxy.certs) and writes the merged bundle (public certs only)
next to the state dir, in ``boundary-trust/`` (the state dir itself is hidden from the jail).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from proxy.mitm import system_cafile
from proxy.rules import Action
from proxy.server import MitmMode

from .config import Config
from .toolconfig import set_npm

CA_ENV = (
    "SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "GIT_SSL_CAINFO", "PIP_CERT",
    "AWS_CA_BUNDLE", "CARGO_HTTP_CAINFO", "DENO_CERT", "NIX_SSL_CERT_FILE", "NPM_CONFIG_CAFILE", "BUNDLE_SSL_CA_CERT",
    "CODEX_CA_CERTIFICATE",
)  # fmt: skip
DISTRO_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem", "/etc/ssl/ca-bundle.pem",
)  # fmt: skip
CA_BASENAME = "mitmproxy"


@dataclass(frozen=True, slots=True)
class Trust:
    bundle: Path  # readable inside the jail
    pem: bytes

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        out = dict(env)
        for key in CA_ENV:
            if key.startswith("NPM_CONFIG_"):
                set_npm(out, key, str(self.bundle))
            else:
                out[key] = str(self.bundle)
        return out

    def files(self) -> dict[str, bytes]:
        """Distro bundle paths to cover (nsjail); only those that exist get covered."""
        return dict.fromkeys(DISTRO_BUNDLES, self.pem)


def interception_possible(config: Config) -> bool:
    if config.mitm is MitmMode.NEVER:
        return False
    if config.mitm is MitmMode.ALWAYS or config.secrets:
        return True
    return any(r.is_l7 for r in config.rules if r.action is Action.ALLOW)


def prepare(config: Config, env: Mapping[str, str]) -> Trust | None:
    """The merged bundle when interception can happen, else None. Raises OSError."""
    if not interception_possible(config):
        return None
    confdir = config.state_dir / "ca"
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(confdir, 0o700)
    cert_file = confdir / f"{CA_BASENAME}-ca-cert.pem"
    if not (cert_file.is_file() and (confdir / f"{CA_BASENAME}-ca.pem").is_file()):
        # the CA is made once (mitmproxy's import and the key generation are slow): later runs only read it
        from mitmproxy.certs import CertStore

        CertStore.from_store(confdir, CA_BASENAME, 2048)
    ca_cert = cert_file.read_bytes()
    sources = [system_cafile(), *(env[k] for k in CA_ENV if env.get(k))]
    parts: list[bytes] = []
    seen: set[str] = set()
    for src in sources:
        real = os.path.realpath(src)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        parts.append(Path(real).read_bytes().rstrip() + b"\n")
    pem = b"".join(parts) + ca_cert
    out_dir = config.state_dir.parent / "boundary-trust"
    out_dir.mkdir(parents=True, exist_ok=True)
    bundle = out_dir / "ca-bundle.pem"
    tmp = out_dir / f".ca-bundle.{os.getpid()}"
    tmp.write_bytes(pem)
    os.chmod(tmp, 0o644)
    tmp.replace(bundle)
    return Trust(bundle, pem)

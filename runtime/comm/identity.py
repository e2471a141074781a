"""A party's identity on planc's links: the deployment CA, certificates whose CN is the
party's name, and the TLS contexts that require them on both sides.

planc/certs.py writes deployments with `new_ca` / `new_identity`; local runs make
throwaway ones (`throwaway_identities`); comm/tls.py and the daemons' HTTPS API build
their contexts from an `Identity`. Keys are written 0600 from the start.
"""
from __future__ import annotations

import datetime
import ipaddress
import ssl

# ---- certificates (planc/certs.py writes deployments with these) -----------------------------

def _x509():
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    return x509, hashes, serialization, ec


def _key_pem(k, serialization) -> bytes:
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                           serialization.NoEncryption())


def new_ca(name: str = "planc-ca", days: int = 365) -> tuple[bytes, bytes]:
    """A self-signed CA: (cert PEM, key PEM), EC P-256."""
    x509, hashes, serialization, ec = _x509()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key, serialization)


def new_identity(ca_cert: bytes, ca_key: bytes, name: str, hosts=("127.0.0.1", "localhost"),
                 days: int = 365) -> tuple[bytes, bytes]:
    """A party's (cert PEM, key PEM) signed by the CA: CN = name, SAN DNS:name + hosts,
    for TLS servers and clients alike."""
    x509, hashes, serialization, ec = _x509()
    ca = x509.load_pem_x509_certificate(ca_cert)
    signer = serialization.load_pem_private_key(ca_key, None)
    key = ec.generate_private_key(ec.SECP256R1())
    sans, seen = [], set()
    for h in (name, *hosts):
        if h in seen:
            continue
        seen.add(h)
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.timezone.utc)
    eku = x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH, x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
            .add_extension(eku, critical=False).add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key, serialization)


def cert_name(cert_pem_path) -> str:
    """The CN of a PEM certificate file."""
    x509 = _x509()[0]
    with open(cert_pem_path, "rb") as f:
        c = x509.load_pem_x509_certificate(f.read())
    cns = c.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not cns:
        raise ValueError(f"{cert_pem_path}: certificate without a common name")
    return cns[0].value


def throwaway_identities(names, directory) -> dict:
    """{name: Identity} of a fresh deployment in `directory` (local runs, tests)."""
    import os
    ca_cert, ca_key = new_ca("planc-throwaway-ca", 2)
    ca = os.path.join(directory, "ca.pem")
    with open(ca, "wb") as f:
        f.write(ca_cert)
    out = {}
    for n in names:
        c, k = new_identity(ca_cert, ca_key, n, days=2)
        paths = [os.path.join(directory, f"{n}.{e}") for e in ("pem", "key")]
        for p, data in zip(paths, (c, k)):
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        out[n] = Identity(paths[0], paths[1], ca)
    return out


# ---- identities and contexts ----------------------------------------------------------------

class Identity:
    """This party's certificate, key and the deployment CA (PEM paths); `.name` its CN."""

    def __init__(self, cert, key, ca, name=None):
        self.cert, self.key, self.ca = str(cert), str(key), str(ca)
        self._server = self.server_context()  # a key that does not fit the certificate fails here
        self._client = self.client_context()
        cn = cert_name(self.cert)
        if name is not None and name != cn:
            raise ValueError(f"{self.cert}: certificate of {cn!r}, not {name!r}")
        self.name = cn

    def _context(self, protocol) -> ssl.SSLContext:
        ctx = ssl.SSLContext(protocol)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.load_verify_locations(cafile=self.ca)  # the deployment CA is the only trust root
        ctx.check_hostname = False  # the peer's CN is checked against the expected identity instead
        ctx.verify_mode = ssl.CERT_REQUIRED  # both sides: mutual authentication
        return ctx

    def server_context(self) -> ssl.SSLContext:
        return self._context(ssl.PROTOCOL_TLS_SERVER)

    def client_context(self) -> ssl.SSLContext:
        return self._context(ssl.PROTOCOL_TLS_CLIENT)

    def __repr__(self):
        return f"Identity({self.name!r}, cert={self.cert!r})"


def peer_name(sock) -> str:
    """CN of the verified peer certificate of an SSLSocket or SSLObject."""
    cert = sock.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return v
    raise CommError("the peer presented no verified certificate with a common name")


__all__ = ["Identity", "peer_name", "new_ca", "new_identity", "cert_name", "throwaway_identities"]

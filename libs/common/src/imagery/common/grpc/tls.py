"""TLS for the gRPC servers: a certificate and key, and optionally a client CA (then every
client must present a certificate it signed: mTLS). The files are checked again on each new
connection, so a rotation (cert-manager rewriting the Secret) takes effect without a restart;
a change that does not load (files half-written, key and certificate not a pair) keeps the
previous configuration and logs a warning."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Protocol

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from imagery.common.config import ConfigError

log = logging.getLogger(__name__)

_CERT_VARIABLE = "TLS_CERT_FILE"
_KEY_VARIABLE = "TLS_KEY_FILE"
_CA_VARIABLE = "TLS_CLIENT_CA_FILE"
_BEGIN_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"


class TlsFiles(Protocol):
    """Where the server's TLS files are (`Settings` is one); no certificate means plaintext."""

    @property
    def tls_cert_file(self) -> str | None: ...

    @property
    def tls_key_file(self) -> str | None: ...

    @property
    def tls_client_ca_file(self) -> str | None: ...


class TlsFileError(ConfigError):
    """A TLS file cannot be read or does not hold what it should; names the variable."""


@dataclass(frozen=True, slots=True)
class _Pems:
    cert_chain: bytes
    key: bytes
    client_ca: bytes | None


def server_credentials(files: TlsFiles) -> grpc.ServerCredentials | None:
    """Credentials that follow the files, or None when no certificate is configured.
    Raises `TlsFileError` when the files cannot be used now (at start-up)."""
    if files.tls_cert_file is None or files.tls_key_file is None:
        return None
    return ReloadingCertificates(
        files.tls_cert_file, files.tls_key_file, files.tls_client_ca_file
    ).credentials()


class ReloadingCertificates:
    """The current certificate configuration, re-read when a file changes (by stat: inode,
    size, mtime; then by content). gRPC calls `fetch` at each handshake, from its threads."""

    def __init__(self, cert_file: str, key_file: str, client_ca_file: str | None) -> None:
        self._files = (
            (_CERT_VARIABLE, cert_file),
            (_KEY_VARIABLE, key_file),
            *(((_CA_VARIABLE, client_ca_file),) if client_ca_file is not None else ()),
        )
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._pems = self._load()
        self._failed_stamp: tuple[tuple[int, int, int], ...] | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(
            _configuration(self._pems),
            self.fetch,  # type: ignore[arg-type]  # gRPC documents None as "keep the current"
            require_client_authentication=self._pems.client_ca is not None,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """A new configuration when the files changed and load, else None (keep the current)."""
        with self._lock:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            try:
                pems = self._load()
            except TlsFileError as exc:
                if stamp != self._failed_stamp:  # once per state of the files, not per handshake
                    self._failed_stamp = stamp
                    log.warning(
                        "tls files changed but do not load; serving the previous certificate",
                        extra={"error": str(exc)},
                    )
                return None
            self._stamp, self._failed_stamp = stamp, None
            if pems == self._pems:
                return None
            self._pems = pems
            log.info("tls certificate reloaded", extra={"files": [p for _, p in self._files]})
            return _configuration(pems)

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        """Cheap change detection; a file that cannot be stat'ed is read (and fails) in `_load`."""
        stamps = []
        for _, path in self._files:
            try:
                st = os.stat(path)
            except OSError:
                stamps.append((-1, -1, -1))
            else:
                stamps.append((st.st_ino, st.st_size, st.st_mtime_ns))
        return tuple(stamps)

    def _load(self) -> _Pems:
        data = {variable: _read(variable, path) for variable, path in self._files}
        cert_chain, key = data[_CERT_VARIABLE], data[_KEY_VARIABLE]
        client_ca = data.get(_CA_VARIABLE)
        leaf = _certificates(_CERT_VARIABLE, cert_chain)[0]
        if client_ca is not None:
            _certificates(_CA_VARIABLE, client_ca)
        try:
            private_key = serialization.load_pem_private_key(key, password=None)
        except (ValueError, TypeError) as exc:
            raise TlsFileError(
                f"{_KEY_VARIABLE} does not hold an unencrypted PEM private key ({exc})."
            ) from None
        if _public(leaf.public_key()) != _public(private_key.public_key()):
            raise TlsFileError(
                f"{_KEY_VARIABLE} is not the private key of the certificate in {_CERT_VARIABLE}."
            )
        return _Pems(cert_chain, key, client_ca)


def _read(variable: str, path: str) -> bytes:
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise TlsFileError(f"{variable}={path!r} cannot be read ({exc.strerror}).") from None


def _certificates(variable: str, data: bytes) -> list[x509.Certificate]:
    """Every certificate in a PEM bundle; a bundle with a truncated one is refused."""
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise TlsFileError(f"{variable} does not hold PEM certificates ({exc}).") from None
    if len(certificates) != data.count(_BEGIN_CERTIFICATE):
        raise TlsFileError(f"{variable} holds an incomplete certificate.")
    return certificates


def _public(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _configuration(pems: _Pems) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration(
        [(pems.key, pems.cert_chain)], root_certificates=pems.client_ca
    )

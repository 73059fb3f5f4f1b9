"""mTLS over real sockets with certificates this test makes: a client certificate's identity
(SPIFFE URI SAN, else subject CN) is a principal when it is mapped to a project; unknown
identities, missing certificates and a sidecar's header are refused; the server follows its
certificate files when they are rotated, without a restart. Real Postgres behind the
authenticator; the service is GetImage through the real use case and repository."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from imagery.common.access import open_access
from imagery.common.config import ConfigError, Settings
from imagery.common.db.images import PostgresImageRepository
from imagery.common.db.projects import PostgresProjects
from imagery.common.grpc.auth import current_principal
from imagery.common.grpc.images import image_to_proto
from imagery.common.grpc.server import GrpcServer, ServiceRegistration
from imagery.common.grpc.tls import TlsFileError
from imagery.common.ids import new_image_id
from imagery.common.tenancy import Actor, Principal, Scope
from imagery.delivery.use_cases import GetImage
from imagery.v1 import delivery_service_pb2 as pb
from imagery.v1 import delivery_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SPIFFE_ID = "spiffe://imagery.test/ns/web/sa/frontend"
MAPPED_CN = "batch-worker"
CALL_TIMEOUT = 10.0
# A test channel of its own: no subchannel shared with another channel (and its backoff).
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: bytes
    key: bytes


@dataclass(frozen=True)
class Authority:
    name: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def create(cls, name: str) -> Authority:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            _builder(subject, subject, key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=True), critical=True)
            .sign(key, hashes.SHA256())
        )
        return cls(name, key, cert)

    def issue(
        self,
        common_name: str,
        *,
        server: bool = False,
        uri: str | None = None,
    ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        names: list[x509.GeneralName] = []
        if server:
            names += [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        if uri is not None:
            names.append(x509.UniformResourceIdentifier(uri))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(subject, self.cert.subject, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
    )


def _usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class Pki:
    ca: Authority
    other_ca: Authority  # the rotation's new issuer
    server: Issued
    spiffe_client: Issued
    cn_client: Issued
    unknown_client: Issued


@pytest.fixture(scope="module")
def pki() -> Pki:
    ca = Authority.create("imagery test CA")
    return Pki(
        ca=ca,
        other_ca=Authority.create("imagery rotated CA"),
        server=ca.issue("imagery-delivery", server=True),
        # Its CN is mapped to nothing: only the SPIFFE id can make it a principal.
        spiffe_client=ca.issue("frontend-unmapped-cn", uri=SPIFFE_ID),
        cn_client=ca.issue(MAPPED_CN),
        unknown_client=ca.issue("stranger", uri="spiffe://imagery.test/ns/web/sa/stranger"),
    )


# --- the server -----------------------------------------------------------------------------


class RecordingDelivery(pb_grpc.DeliveryServiceServicer):
    """GetImage through the real use case and repository; remembers who called."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.callers: list[Principal] = []
        self._get_image = GetImage(PostgresImageRepository(pool))

    async def GetImage(self, request: pb.GetImageRequest, context: Any) -> pb.GetImageResponse:
        principal = current_principal()
        self.callers.append(principal)
        record = await self._get_image(principal, image_id=request.image_id)
        return pb.GetImageResponse(image=image_to_proto(record))

    async def GetDownloadUrl(self, request: Any, context: Any) -> Any:
        raise NotImplementedError  # only GetImage is called here

    async def BatchGetDownloadUrls(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    def WatchImage(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def BatchGetImages(self, request: Any, context: Any) -> Any:
        raise NotImplementedError

    async def ListImages(self, request: Any, context: Any) -> Any:
        raise NotImplementedError


@dataclass
class Running:
    port: int
    service: RecordingDelivery
    files: Path


@pytest.fixture
def tls_dir(tmp_path: Path, pki: Pki) -> Path:
    (tmp_path / "tls.crt").write_bytes(pki.server.cert)
    (tmp_path / "tls.key").write_bytes(pki.server.key)
    (tmp_path / "client-ca.crt").write_bytes(pki.ca.pem)
    return tmp_path


def _tls_settings(settings: Settings, files: Path, *, client_ca: bool) -> Settings:
    return replace(
        settings,
        tls_cert_file=str(files / "tls.crt"),
        tls_key_file=str(files / "tls.key"),
        tls_client_ca_file=str(files / "client-ca.crt") if client_ca else None,
    )


async def _serve(settings: Settings, pool: asyncpg.Pool, files: Path) -> AsyncIterator[Running]:
    projects = PostgresProjects(pool)
    actor = Actor("cli:test")
    await projects.map_identity(SPIFFE_ID, "default", [Scope.IMAGES_READ], actor)
    await projects.map_identity(MAPPED_CN, "default", [Scope.IMAGES_READ], actor)
    service = RecordingDelivery(pool)
    registration = ServiceRegistration(
        pb.DESCRIPTOR.services_by_name["DeliveryService"].full_name,
        lambda server: pb_grpc.add_DeliveryServiceServicer_to_server(service, server),
    )
    async with AsyncExitStack() as stack:
        authenticator, _ = await open_access(settings, pool, stack)
        server = GrpcServer(
            [registration], grace_seconds=1, authenticator=authenticator, tls=settings
        )
        port = await server.start(0, host="127.0.0.1")
        try:
            yield Running(port, service, files)
        finally:
            await server.stop()


@pytest.fixture
async def mtls(settings: Settings, pool: asyncpg.Pool, tls_dir: Path) -> AsyncIterator[Running]:
    """Client certificates required and verified against the test CA."""
    async for running in _serve(_tls_settings(settings, tls_dir, client_ca=True), pool, tls_dir):
        yield running


@pytest.fixture
async def tls_only(settings: Settings, pool: asyncpg.Pool, tls_dir: Path) -> AsyncIterator[Running]:
    """TLS without a client CA: no client certificate is asked for."""
    async for running in _serve(_tls_settings(settings, tls_dir, client_ca=False), pool, tls_dir):
        yield running


# --- the client -----------------------------------------------------------------------------


async def _get_image(
    port: int,
    trust: Authority,
    client: Issued | None,
    metadata: tuple[tuple[str, str], ...] = (),
) -> grpc.aio.AioRpcError:
    """GetImage of an id nobody has, over a new connection; returns the error it ends with."""
    credentials = grpc.ssl_channel_credentials(
        root_certificates=trust.pem,
        private_key=client.key if client else None,
        certificate_chain=client.cert if client else None,
    )
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", credentials, options=CHANNEL_OPTIONS
    ) as channel:
        stub = pb_grpc.DeliveryServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetImage(
                pb.GetImageRequest(image_id=new_image_id()),
                metadata=metadata,
                timeout=CALL_TIMEOUT,
            )
    return caught.value


def _reason(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None, f"{error.code()}: {error.details()}"
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    return str(info.reason)


# --- tests ----------------------------------------------------------------------------------


async def test_a_mapped_spiffe_id_is_the_caller(mtls: Running, pki: Pki) -> None:
    error = await _get_image(mtls.port, pki.ca, pki.spiffe_client)
    assert (error.code(), _reason(error)) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    [caller] = mtls.service.callers
    assert (caller.kind, caller.id, caller.project_id) == ("mtls", SPIFFE_ID, "default")
    assert caller.scopes == frozenset({Scope.IMAGES_READ})


async def test_a_certificate_without_a_spiffe_id_is_known_by_its_cn(
    mtls: Running, pki: Pki
) -> None:
    error = await _get_image(mtls.port, pki.ca, pki.cn_client)
    assert (error.code(), _reason(error)) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert [(c.id, c.project_id) for c in mtls.service.callers] == [(MAPPED_CN, "default")]


async def test_an_unmapped_identity_signed_by_the_ca_is_refused(mtls: Running, pki: Pki) -> None:
    error = await _get_image(mtls.port, pki.ca, pki.unknown_client)
    assert (error.code(), _reason(error)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "INVALID_CREDENTIALS",
    )
    assert mtls.service.callers == []


async def test_without_a_client_certificate_the_handshake_is_refused(
    mtls: Running, pki: Pki
) -> None:
    error = await _get_image(mtls.port, pki.ca, None)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls.service.callers == []


async def test_a_certificate_from_another_ca_is_refused(mtls: Running, pki: Pki) -> None:
    outsider = pki.other_ca.issue(MAPPED_CN)  # the mapped name, but not signed by the client CA
    error = await _get_image(mtls.port, pki.ca, outsider)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert mtls.service.callers == []


async def test_tls_without_a_client_ca_needs_other_credentials(tls_only: Running, pki: Pki) -> None:
    error = await _get_image(tls_only.port, pki.ca, None)
    assert (error.code(), _reason(error)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )
    # A sidecar's header is not trusted unless MTLS_FORWARDED_IDENTITY_HEADER names it.
    forged = (("x-forwarded-client-cert", f"By=spiffe://imagery.test/self;URI={SPIFFE_ID}"),)
    error = await _get_image(tls_only.port, pki.ca, None, forged)
    assert (error.code(), _reason(error)) == (
        grpc.StatusCode.UNAUTHENTICATED,
        "MISSING_CREDENTIALS",
    )
    assert tls_only.service.callers == []


async def test_a_rotated_certificate_is_served_without_a_restart(mtls: Running, pki: Pki) -> None:
    assert (await _get_image(mtls.port, pki.other_ca, pki.spiffe_client)).code() == (
        grpc.StatusCode.UNAVAILABLE  # the client does not trust the current issuer
    )
    rotated = pki.other_ca.issue("imagery-delivery", server=True)
    _rotate(mtls.files, rotated)

    after = await _get_image(mtls.port, pki.other_ca, pki.spiffe_client)
    assert (after.code(), _reason(after)) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    old_trust = await _get_image(mtls.port, pki.ca, pki.spiffe_client)
    assert old_trust.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_half_written_rotation_keeps_the_previous_certificate(
    mtls: Running, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    rotated = pki.other_ca.issue("imagery-delivery", server=True)
    (mtls.files / "tls.crt").write_bytes(rotated.cert)  # the key is not written yet
    with caplog.at_level(logging.WARNING, logger="imagery.common.grpc.tls"):
        error = await _get_image(mtls.port, pki.ca, pki.spiffe_client)
    assert (error.code(), _reason(error)) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")
    assert any("previous certificate" in r.getMessage() for r in caplog.records)

    (mtls.files / "tls.crt").write_bytes(rotated.cert[: len(rotated.cert) // 2])  # truncated
    (mtls.files / "tls.key").write_bytes(rotated.key)
    error = await _get_image(mtls.port, pki.ca, pki.spiffe_client)
    assert (error.code(), _reason(error)) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")

    (mtls.files / "tls.crt").write_bytes(rotated.cert)  # the writer finishes
    error = await _get_image(mtls.port, pki.other_ca, pki.spiffe_client)
    assert (error.code(), _reason(error)) == (grpc.StatusCode.NOT_FOUND, "IMAGE_NOT_FOUND")


def _rotate(files: Path, issued: Issued) -> None:
    """As the kubelet updates a mounted Secret: new files, then an atomic rename over the old."""
    for name, data in (("tls.crt", issued.cert), ("tls.key", issued.key)):
        staged = files / f".{name}.new"
        staged.write_bytes(data)
        staged.replace(files / name)


# --- settings -------------------------------------------------------------------------------


@pytest.fixture
def base_env() -> dict[str, str]:
    return {
        "DATABASE_URL": "postgresql://imagery@localhost/imagery",
        "AWS_REGION": "eu-west-1",
        "S3_BUCKET": "imagery",
    }


def test_settings_read_the_tls_files(base_env: dict[str, str], tls_dir: Path) -> None:
    env = {
        **base_env,
        "TLS_CERT_FILE": str(tls_dir / "tls.crt"),
        "TLS_KEY_FILE": str(tls_dir / "tls.key"),
        "TLS_CLIENT_CA_FILE": str(tls_dir / "client-ca.crt"),
    }
    settings = Settings.from_env(env)
    assert (settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file) == (
        env["TLS_CERT_FILE"],
        env["TLS_KEY_FILE"],
        env["TLS_CLIENT_CA_FILE"],
    )
    plain = Settings.from_env(base_env)
    assert (plain.tls_cert_file, plain.tls_key_file, plain.tls_client_ca_file) == (None,) * 3


@pytest.mark.parametrize(
    ("given", "named"),
    [
        ({"TLS_CERT_FILE": "tls.crt"}, "TLS_KEY_FILE is not set"),
        ({"TLS_KEY_FILE": "tls.key"}, "TLS_CERT_FILE is not set"),
        ({"TLS_CLIENT_CA_FILE": "client-ca.crt"}, "TLS_CERT_FILE is not set"),
        ({"TLS_CERT_FILE": "tls.crt", "TLS_KEY_FILE": "missing.key"}, "TLS_KEY_FILE='"),
    ],
)
def test_incomplete_or_unreadable_tls_settings_fail_naming_the_variable(
    base_env: dict[str, str], tls_dir: Path, given: dict[str, str], named: str
) -> None:
    env = {**base_env, **{name: str(tls_dir / file) for name, file in given.items()}}
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


@dataclass(frozen=True)
class Files:
    tls_cert_file: str | None
    tls_key_file: str | None
    tls_client_ca_file: str | None


async def test_unusable_tls_files_fail_before_the_server_listens(tls_dir: Path, pki: Pki) -> None:
    files = Files(*(str(tls_dir / name) for name in ("tls.crt", "tls.key", "client-ca.crt")))
    (tls_dir / "tls.key").write_bytes(pki.cn_client.key)  # a key, but not the certificate's
    with pytest.raises(TlsFileError, match="TLS_KEY_FILE is not the private key"):
        GrpcServer([], tls=files)
    (tls_dir / "tls.key").write_bytes(pki.server.key)
    (tls_dir / "client-ca.crt").write_bytes(b"not a certificate")
    with pytest.raises(TlsFileError, match="TLS_CLIENT_CA_FILE does not hold PEM"):
        GrpcServer([], tls=files)
    (tls_dir / "tls.crt").write_bytes(pki.server.cert[:300])  # half-written
    with pytest.raises(TlsFileError, match="TLS_CERT_FILE"):
        GrpcServer([], tls=files)
    assert isinstance(TlsFileError("x"), ConfigError)  # run_service exits 2 with the message

"""imagery-client's mechanics over real sockets, against its in-process fake (what the real
services answer is tests/e2e/client/test_conformance.py): the service config retries
UNAVAILABLE and nothing else, wait_ready rides out a busy or cut stream, the PUT carries
exactly the signed headers, and the API key travels on plaintext, TLS and mTLS channels."""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagery.client import ImageryClient, _upload, errors
from imagery.client.testing import FakeImageryServer
from imagery.v1 import image_pb2
from imagery.v1 import upload_service_pb2 as upb
from tests import images

pytestmark = pytest.mark.integration


@pytest.fixture
def fake() -> object:
    with FakeImageryServer() as server:
        yield server


def test_unavailable_is_retried_by_the_service_config_and_nothing_else_is(
    fake: FakeImageryServer,
) -> None:
    with fake.client() as imagery:
        image_id = imagery.upload(images.png(), "image/png")
        fake.inject_error("GetImage", "UNAVAILABLE", times=2)
        assert imagery.get_image(image_id).image_id == image_id
        assert fake.calls("GetImage") == 3

        fake.inject_error("GetImage", "RATE_LIMITED", retry_delay=1.5)
        with pytest.raises(errors.RateLimited) as limited:
            imagery.get_image(image_id)
        assert limited.value.retry_delay == pytest.approx(1.5)
        assert fake.calls("GetImage") == 4, "RESOURCE_EXHAUSTED is the caller's to retry"

        fake.inject_error("CreateUploadUrl", "UNAVAILABLE")
        assert imagery.upload(images.png(), "image/png")
        assert fake.calls("CreateUploadUrl") == 3  # two uploads, one retry


def test_without_retries_in_the_config_unavailable_reaches_the_caller(
    fake: FakeImageryServer,
) -> None:
    with fake.client(service_config={}) as imagery:
        fake.inject_error("GetImage", "UNAVAILABLE")
        with pytest.raises(errors.Unavailable):
            imagery.get_image("01M8V3JB6V38XGKQHBEKP3VZFZ")
    assert fake.calls("GetImage") == 1


def test_the_put_carries_exactly_the_signed_headers(fake: FakeImageryServer) -> None:
    body = images.png(64, 48)
    with fake.client() as imagery:
        declared = imagery.upload(body, "image/png")
        plain = imagery.upload(body, "image/png", declare=False)
    sent = {k.lower(): v for k, v in (fake.upload_headers(declared) or {}).items()}
    signed = {k for k in sent if k.startswith(("content-", "x-amz-"))}
    assert signed == {"content-type", "content-length", "x-amz-checksum-sha256"}
    assert sent["content-length"] == str(len(body))
    assert sent["user-agent"].startswith("imagery-client/")
    unsigned = {k.lower() for k in fake.upload_headers(plain) or {}}
    assert {k for k in unsigned if k.startswith(("content-", "x-amz-"))} == {
        "content-type",
        "content-length",  # every PUT has one; signed only when declared
    }
    assert fake.uploaded_bytes(declared) == body


def test_storage_refusing_the_bytes_is_upload_failed(fake: FakeImageryServer) -> None:
    body, other = images.png(), images.png(65, 48)
    with fake.client() as imagery:
        payload = _upload.prepare(body, None)
        request = _upload.create_request(
            payload, "image/png", labels=None, request_id=None, declare=True
        )
        ticket: upb.CreateUploadUrlResponse = imagery.upload_stub.CreateUploadUrl(request)
        forged = _upload.Payload(other, None, len(body), payload.sha256, "x.png")
        with pytest.raises(errors.UploadFailed) as refused:
            _upload.put(ticket, forged, "image/png", timeout=10)
        assert refused.value.http_status == 400 and "BadDigest" in str(refused.value)


def test_an_upload_from_a_path_streams_the_file(fake: FakeImageryServer, tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(images.png(300, 200))
    with fake.client() as imagery:
        image = imagery.wait_ready(imagery.upload(path, "image/png"), timeout=10)
    assert image.file_name == "cat.png" and (image.width, image.height) == (300, 200)


def test_wait_ready_follows_the_stream_through_busy_and_cut_streams(
    fake: FakeImageryServer,
) -> None:
    fake.auto_process = False
    with fake.client() as imagery:
        image_id = imagery.upload(images.png(), "image/png")
        fake.inject_error("WatchImage", "SERVER_BUSY", retry_delay=0.05)
        fake.inject_error("WatchImage", "UNAVAILABLE", code=grpc.StatusCode.CANCELLED)

        def processor() -> None:
            time.sleep(0.5)
            fake.mark_processing(image_id)
            time.sleep(0.3)
            fake.process(image_id)

        worker = threading.Thread(target=processor)
        worker.start()
        image = imagery.wait_ready(image_id, timeout=20)
        worker.join()
        assert image.status == image_pb2.IMAGE_STATUS_READY
        assert fake.calls("WatchImage") >= 3

        stuck = imagery.upload(images.png(), "image/png")
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="PENDING"):
            imagery.wait_ready(stuck, timeout=1)
        assert time.monotonic() - started < 5

        fake.fail(stuck, "CORRUPT")
        with pytest.raises(errors.ImageFailed) as failed:
            imagery.wait_ready(stuck, timeout=5)
        assert failed.value.failure_reason == "CORRUPT" and failed.value.image_id == stuck


async def test_the_async_client_waits_and_retries_too(fake: FakeImageryServer) -> None:
    fake.auto_process = False
    async with fake.async_client() as imagery:
        image_id = await imagery.upload(images.png(), "image/png")
        fake.inject_error("GetImage", "UNAVAILABLE")
        assert (await imagery.get_image(image_id)).status == image_pb2.IMAGE_STATUS_PENDING
        fake.inject_error("WatchImage", "SERVER_BUSY", retry_delay=0.05)
        asyncio.get_running_loop().call_later(0.3, fake.process, image_id)
        image = await imagery.wait_ready(image_id, timeout=20)
        assert image.status == image_pb2.IMAGE_STATUS_READY
        with pytest.raises(TimeoutError):
            await imagery.wait_ready(await imagery.upload(images.png(), "image/png"), timeout=0.5)


def test_credentials_and_scopes_are_enforced_like_imagery() -> None:
    keys = {"reader": {"images.read"}, "writer": {"images.create", "images.read"}}
    with FakeImageryServer(api_keys=keys, require_declared_upload=True) as fake:
        with fake.client(api_key=None) as anonymous, pytest.raises(errors.MissingCredentials):
            anonymous.get_image("01M8V3JB6V38XGKQHBEKP3VZFZ")
        with fake.client(api_key="nope") as stranger, pytest.raises(errors.InvalidCredentials):
            stranger.get_image("01M8V3JB6V38XGKQHBEKP3VZFZ")
        with fake.client(api_key="reader") as reader, pytest.raises(errors.MissingScope) as no:
            reader.upload(images.png(), "image/png")
        assert no.value.metadata["scope"] == "images.create"
        with fake.client(api_key="writer") as writer:
            with pytest.raises(errors.DeclarationRequired):
                writer.upload(images.png(), "image/png", declare=False)
            assert writer.upload(images.png(), "image/png")


# --- TLS -----------------------------------------------------------------------------------


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[str, ec.EllipticCurvePrivateKey]
) -> x509.CertificateBuilder:
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[0])]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
    )


def _pems(tmp_path: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        _certificate("test ca", ca_key, ("test ca", ca_key))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    files = {"ca": ca.public_bytes(serialization.Encoding.PEM)}
    for name, extension in (
        (
            "server",
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ),
        ("client", x509.SubjectAlternativeName([x509.UniformResourceIdentifier("spiffe://t/c")])),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            _certificate(name, key, ("test ca", ca_key))
            .add_extension(extension, critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        files[name] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{name}-key"] = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(data)
    return paths


def test_mtls_presents_the_client_certificate_and_sends_the_key_as_call_credentials(
    tmp_path: Path,
) -> None:
    pem = _pems(tmp_path)
    credentials = grpc.ssl_server_credentials(
        [(pem["server-key"].read_bytes(), pem["server"].read_bytes())],
        root_certificates=pem["ca"].read_bytes(),
        require_client_auth=True,
    )
    with FakeImageryServer(server_credentials=credentials) as fake:
        mtls = {
            "root_certificates": pem["ca"],  # a path
            "private_key": pem["client-key"].read_bytes(),  # or PEM bytes
            "certificate_chain": pem["client"],
        }
        with fake.client(**mtls) as imagery:
            image_id = imagery.upload(images.png(), "image/png")
            assert imagery.wait_ready(image_id, timeout=10).status == image_pb2.IMAGE_STATUS_READY
        with fake.client(**mtls, api_key=None) as keyless, pytest.raises(errors.MissingCredentials):
            keyless.get_image(image_id)
        no_certificate = {"root_certificates": pem["ca"], "service_config": {}}
        with fake.client(**no_certificate) as refused, pytest.raises(errors.Unavailable):
            refused.get_image(image_id, timeout=5)  # the handshake fails
        with pytest.raises(ValueError, match="insecure=True"):
            ImageryClient(fake.address, fake.address, insecure=True, root_certificates=b"x")

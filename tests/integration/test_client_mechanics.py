"""imagery-client's mechanics over real sockets, against its in-process fake (what the real
services answer is tests/e2e/client/test_conformance.py): the service config retries
UNAVAILABLE and nothing else, a CreateUploadUrl whose answer is lost is retried onto the same
image, wait_ready rides out a busy or cut stream, the PUT carries exactly the signed headers,
and the API key travels on plaintext, TLS and mTLS channels."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from imagery.client import ImageryClient, _upload, errors, sync
from imagery.client.channels import ChannelSettings
from imagery.client.testing import FakeImageryServer
from imagery.common.errors import DependencyUnavailable
from imagery.common.grpc.errors import to_rpc_status
from imagery.v1 import image_pb2, upload_service_pb2_grpc
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


def test_without_retries_in_the_config_unavailable_reaches_the_caller_as_imagery_sends_it(
    fake: FakeImageryServer,
) -> None:
    with fake.client(service_config={}) as imagery:
        fake.inject_error("GetImage", "UNAVAILABLE")
        with pytest.raises(errors.Unavailable) as unavailable:
            imagery.get_image("01M8V3JB6V38XGKQHBEKP3VZFZ")
    assert fake.calls("GetImage") == 1
    # What imagery's own gRPC edge answers when Postgres or S3 cannot be reached.
    real = to_rpc_status(
        DependencyUnavailable(
            "The image database cannot be reached right now: retry with exponential backoff."
        )
    )
    expected = errors.error_for(
        real.code, real.details, errors.decode_status(real.code, real.trailing_metadata)
    )
    got = unavailable.value
    assert type(got) is type(expected) is errors.DependencyUnavailable
    assert (got.code, got.reason, got.message) == (expected.code, expected.reason, expected.message)
    assert got.retry_delay == expected.retry_delay is not None


def _images_in(fake: FakeImageryServer) -> int:
    with fake.client() as imagery:
        return len(list(imagery.list_images()))


def test_a_create_upload_url_whose_answer_is_lost_is_retried_onto_the_same_image(
    fake: FakeImageryServer,
) -> None:
    request = upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
    with fake.client() as imagery:
        fake.inject_error("CreateUploadUrl", "UNAVAILABLE", lost_answer=True)
        ticket: upb.CreateUploadUrlResponse = imagery.upload_stub.CreateUploadUrl(request)
    assert fake.calls("CreateUploadUrl") == 2, "the service config retried the lost answer"
    assert _images_in(fake) == 1, "the interceptor's request id made the retry the same image"
    assert request.request_id == "", "the caller's message is left as it was"

    # A channel of one's own with the same config but without the interceptor: two images.
    options = ChannelSettings(api_key=fake.api_key, insecure=True).channel_options()
    with grpc.insecure_channel(fake.address, options=options) as plain:
        fake.inject_error("CreateUploadUrl", "UNAVAILABLE", lost_answer=True)
        stub = upload_service_pb2_grpc.UploadServiceStub(plain)
        stub.CreateUploadUrl(request, metadata=(("authorization", f"Bearer {fake.api_key}"),))
    assert fake.calls("CreateUploadUrl") == 4
    assert _images_in(fake) == 3
    assert ticket.image_id


async def test_the_async_channels_give_create_upload_url_a_request_id_too(
    fake: FakeImageryServer,
) -> None:
    request = upb.CreateUploadUrlRequest(content_type="image/png", file_name="a.png")
    async with fake.async_client() as imagery:
        fake.inject_error("CreateUploadUrl", "UNAVAILABLE", lost_answer=True)
        await imagery.upload_stub.CreateUploadUrl(request)
        fake.inject_error("CreateUploadUrl", "UNAVAILABLE", lost_answer=True)
        assert await imagery.upload(images.png(), "image/png", request_id="mine-1")
    assert fake.calls("CreateUploadUrl") == 4
    assert _images_in(fake) == 2


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


class _Clock:
    """`time` for imagery.client.sync: a monotonic clock that moves only when the client
    sleeps, which records each pause and runs the test's script for it."""

    def __init__(self, script: list[Callable[[], None]]) -> None:
        self.now = 1000.0
        self.pauses: list[float] = []
        self._script = script

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self._script:
            self._script.pop(0)()


def test_wait_ready_honours_retry_info_and_reopens_a_cut_stream(
    fake: FakeImageryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.auto_process = False
    with fake.client() as imagery:
        image_id = imagery.upload(images.png(), "image/png")
        fake.inject_error("WatchImage", "SERVER_BUSY", retry_delay=0.05)
        fake.inject_error("WatchImage", "", code=grpc.StatusCode.CANCELLED)  # a cut stream
        clock = _Clock([lambda: fake.mark_processing(image_id), lambda: fake.process(image_id)])
        monkeypatch.setattr(sync, "time", clock)
        image = imagery.wait_ready(image_id, timeout=20)
        assert image.status == image_pb2.IMAGE_STATUS_READY
        assert fake.calls("WatchImage") == 3
        assert clock.pauses == [0.05, 0.1], "the server's RetryInfo, then the client's backoff"

        stuck = imagery.upload(images.png(), "image/png")
        with pytest.raises(TimeoutError, match="PENDING"):
            imagery.wait_ready(stuck, timeout=0.5)
        assert fake.calls("WatchImage") == 4, "one stream, which the deadline ended"

        fake.fail(stuck, "CORRUPT")
        with pytest.raises(errors.ImageFailed) as failed:
            imagery.wait_ready(stuck, timeout=5)
        assert failed.value.failure_reason == "CORRUPT" and failed.value.image_id == stuck
    assert clock.pauses == [0.05, 0.1]


def test_wait_ready_polls_when_the_project_holds_its_share_of_streams(
    fake: FakeImageryServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.auto_process = False
    with fake.client() as imagery:
        image_id = imagery.upload(images.png(), "image/png")
        fake.inject_error("WatchImage", "QUOTA_EXCEEDED", retry_delay=2)
        clock = _Clock([lambda: fake.process(image_id)])
        monkeypatch.setattr(sync, "time", clock)
        before = fake.calls("GetImage")
        image = imagery.wait_ready(image_id, timeout=20)
        assert image.status == image_pb2.IMAGE_STATUS_READY
        assert fake.calls("WatchImage") == 1, "no second stream while the share is taken"
        assert fake.calls("GetImage") - before >= 2, "it polled until READY"


async def test_the_async_client_waits_and_retries_too(fake: FakeImageryServer) -> None:
    fake.auto_process = False
    async with fake.async_client() as imagery:
        image_id = await imagery.upload(images.png(), "image/png")
        fake.inject_error("GetImage", "UNAVAILABLE")
        assert (await imagery.get_image(image_id)).status == image_pb2.IMAGE_STATUS_PENDING
        assert fake.calls("GetImage") == 2
        fake.inject_error("WatchImage", "SERVER_BUSY", retry_delay=0.05)
        fake.process(image_id)
        image = await imagery.wait_ready(image_id, timeout=20)
        assert image.status == image_pb2.IMAGE_STATUS_READY
        assert fake.calls("WatchImage") == 2
        waiting = await imagery.upload(images.png(), "image/png")
        fake.inject_error("WatchImage", "QUOTA_EXCEEDED", retry_delay=2)
        asyncio.get_running_loop().call_soon(fake.process, waiting)
        assert (await imagery.wait_ready(waiting, timeout=20)).status == (
            image_pb2.IMAGE_STATUS_READY
        )
        assert fake.calls("WatchImage") == 3, "polled instead of a stream past the share"
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

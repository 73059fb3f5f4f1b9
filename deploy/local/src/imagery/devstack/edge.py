"""A local stand-in for CloudFront — a development tool, deliberately small.

It does for a signed URL what CloudFront does: checks the canned-policy signature with the
public key (RSA or ECDSA, SHA-1 or SHA-256), the key pair id, the resource path and the
expiry; then serves the object from the local S3 with its stored Content-Type and
Cache-Control. Anything else gets 403. Only `variants/` are ever served.
Run: python -m imagery.devstack.edge (settings from the environment, see `main`).
"""

from __future__ import annotations

import base64
import os
import sys
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import boto3
from botocore.exceptions import ClientError
from botocore.signers import CloudFrontSigner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from imagery.common.cdn import HASHES, SIGNING_PARAMS, PublicKey, base_url_for


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value.replace("-", "+").replace("_", "=").replace("~", "/"))


def verify_signed_url(
    url: str, public_key: PublicKey, key_pair_id: str, *, now: datetime | None = None
) -> str | None:
    """What CloudFront checks for a canned-policy URL. Returns None when valid, else why not."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    params = dict(query)
    if params.get("Key-Pair-Id") != key_pair_id:
        return "unknown key pair id"
    expires, signature = params.get("Expires", ""), params.get("Signature", "")
    if not expires.isdigit() or not signature:
        return "missing Expires or Signature"
    if int(expires) <= int((now or datetime.now(UTC)).timestamp()):
        return "expired"
    hash_name = params.get("Hash-Algorithm", "SHA1")
    if hash_name not in HASHES:
        return "unsupported Hash-Algorithm"
    kept = "&".join(f"{k}={v}" for k, v in query if k not in SIGNING_PARAMS)
    resource = urlunsplit(parts._replace(query=kept, fragment=""))
    policy = CloudFrontSigner(key_pair_id, lambda m: m).build_policy(
        resource, datetime.fromtimestamp(int(expires), UTC)
    )
    try:
        raw = _b64decode(signature)
        algorithm = HASHES[hash_name]()
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(raw, policy.encode(), padding.PKCS1v15(), algorithm)
        else:
            public_key.verify(raw, policy.encode(), ec.ECDSA(algorithm))
    except (InvalidSignature, ValueError):
        return "signature does not match"
    return None


class Edge(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        port: int,
        *,
        base_url: str,
        public_key: PublicKey,
        key_pair_id: str,
        s3: Any,
        bucket: str,
    ) -> None:
        super().__init__(("127.0.0.1", port), EdgeHandler)
        self.base_url = base_url
        self.public_key = public_key
        self.key_pair_id = key_pair_id
        self.s3 = s3
        self.bucket = bucket


class EdgeHandler(BaseHTTPRequestHandler):
    server: Edge
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._serve(with_body=True)

    def do_HEAD(self) -> None:
        self._serve(with_body=False)

    def _serve(self, *, with_body: bool) -> None:
        problem = verify_signed_url(
            self.server.base_url + self.path, self.server.public_key, self.server.key_pair_id
        )
        key = self.path.split("?", 1)[0].lstrip("/")
        if problem is None and not key.startswith("variants/"):
            problem = "only variants are served"
        if problem is not None:
            self._reply(HTTPStatus.FORBIDDEN, f"403 Forbidden: {problem}\n".encode(), "text/plain")
            return
        try:
            obj = self.server.s3.get_object(Bucket=self.server.bucket, Key=key)
        except ClientError:
            self._reply(HTTPStatus.NOT_FOUND, b"404 Not Found\n", "text/plain")
            return
        body = obj["Body"].read()
        self._reply(
            HTTPStatus.OK,
            body if with_body else b"",
            obj.get("ContentType", "application/octet-stream"),
            length=len(body),
            cache_control=obj.get("CacheControl"),
        )

    def _reply(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        length: int | None = None,
        cache_control: str | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        path = self.path.split("?", 1)[0]
        sys.stderr.write(f"edge {self.command} {path} -> {args[1] if len(args) > 1 else ''}\n")


def main() -> None:
    env = os.environ
    public_key = serialization.load_pem_public_key(
        Path(env["CLOUDFRONT_PUBLIC_KEY_FILE"]).read_bytes()
    )
    s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], region_name=env["AWS_REGION"])
    port = int(env["EDGE_PORT"])
    edge = Edge(
        port,
        base_url=base_url_for(env["CLOUDFRONT_DOMAIN"]),
        public_key=public_key,  # type: ignore[arg-type]
        key_pair_id=env["CLOUDFRONT_KEY_PAIR_ID"],
        s3=s3,
        bucket=env["S3_BUCKET"],
    )
    sys.stderr.write(f"edge: CloudFront stand-in on http://127.0.0.1:{port}\n")
    sys.stderr.flush()
    edge.serve_forever()


if __name__ == "__main__":
    main()

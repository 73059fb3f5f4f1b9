from __future__ import annotations

from pathlib import Path

import pytest

from imagery.common.config import ConfigError
from imagery.delivery.config import load_settings
from tests.keys import pem, private_key

BASE = {
    "DATABASE_URL": "postgresql://u@db/imagery",
    "AWS_REGION": "eu-west-1",
    "S3_BUCKET": "images",
    "CLOUDFRONT_DOMAIN": "d111.cloudfront.net",
    "CLOUDFRONT_KEY_PAIR_ID": "K2JCJMDEHXQW5F",
}


VALID = pem(private_key("ecdsa")).decode()


def test_key_from_pem_with_defaults() -> None:
    settings = load_settings(
        {**BASE, "CLOUDFRONT_PRIVATE_KEY_PEM": pem(private_key("ecdsa")).decode()}
    )
    assert settings.base.grpc_port == 50052
    assert settings.cloudfront_base_url == "https://d111.cloudfront.net"
    assert (settings.expiry_seconds, settings.hash_algorithm) == (600, "SHA1")
    assert settings.expiry_bucket_seconds == 300


def test_key_from_a_file_and_escaped_newlines(tmp_path: Path) -> None:
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(pem(private_key("rsa")))
    assert (
        load_settings({**BASE, "CLOUDFRONT_PRIVATE_KEY_FILE": str(key_file)}).private_key.key_size
        == 2048
    )
    escaped = pem(private_key("rsa")).decode().replace("\n", "\\n")
    assert (
        load_settings({**BASE, "CLOUDFRONT_PRIVATE_KEY_PEM": escaped}).key_pair_id
        == "K2JCJMDEHXQW5F"
    )


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({}, "CLOUDFRONT_PRIVATE_KEY_PEM is not set"),
        ({"CLOUDFRONT_PRIVATE_KEY_PEM": "hello"}, "CLOUDFRONT_PRIVATE_KEY_PEM is not a usable"),
        (
            {"CLOUDFRONT_PRIVATE_KEY_FILE": "/nonexistent/key.pem"},
            "CLOUDFRONT_PRIVATE_KEY_FILE='/nonexistent/key.pem' cannot be read",
        ),
        (
            {"CLOUDFRONT_PRIVATE_KEY_PEM": VALID, "CLOUDFRONT_HASH_ALGORITHM": "md5"},
            "CLOUDFRONT_HASH_ALGORITHM",
        ),
        (
            {"CLOUDFRONT_PRIVATE_KEY_PEM": VALID, "SIGNED_URL_EXPIRY_SECONDS": "0"},
            "SIGNED_URL_EXPIRY_SECONDS",
        ),
    ],
)
def test_a_bad_or_missing_key_stops_start_up(extra: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        load_settings({**BASE, **extra})


def test_missing_domain_is_named() -> None:
    env = {k: v for k, v in BASE.items() if k != "CLOUDFRONT_DOMAIN"}
    with pytest.raises(ConfigError, match=r"^CLOUDFRONT_DOMAIN is not set"):
        load_settings({**env, "CLOUDFRONT_PRIVATE_KEY_PEM": pem(private_key("ecdsa")).decode()})


def test_watchers_are_capped_at_5000_unless_told_otherwise() -> None:
    assert load_settings({**BASE, "CLOUDFRONT_PRIVATE_KEY_PEM": VALID}).max_watchers == 5_000
    told = {**BASE, "CLOUDFRONT_PRIVATE_KEY_PEM": VALID, "DELIVERY_MAX_WATCHERS": "1200"}
    assert load_settings(told).max_watchers == 1_200
    for bad in ("0", "many"):
        with pytest.raises(ConfigError, match=r"^DELIVERY_MAX_WATCHERS="):
            load_settings({**told, "DELIVERY_MAX_WATCHERS": bad})


def test_one_project_may_hold_1000_watchers_and_never_more_than_the_replica() -> None:
    base = {**BASE, "CLOUDFRONT_PRIVATE_KEY_PEM": VALID}
    assert load_settings(base).max_watchers_per_project == 1_000
    told = {**base, "DELIVERY_MAX_WATCHERS_PER_PROJECT": "250"}
    assert load_settings(told).max_watchers_per_project == 250
    fewer = {**base, "DELIVERY_MAX_WATCHERS": "300"}
    assert load_settings(fewer).max_watchers_per_project == 300, "the default follows the cap"
    at_cap = {**fewer, "DELIVERY_MAX_WATCHERS_PER_PROJECT": "300"}
    assert load_settings(at_cap).max_watchers_per_project == 300
    for bad in ("0", "301", "some"):
        with pytest.raises(ConfigError, match=r"^DELIVERY_MAX_WATCHERS_PER_PROJECT="):
            load_settings({**fewer, "DELIVERY_MAX_WATCHERS_PER_PROJECT": bad})

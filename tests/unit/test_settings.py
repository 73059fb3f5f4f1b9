from __future__ import annotations

import pytest

from imagery.common.config import ConfigError, Settings

BASE = {
    "DATABASE_URL": "postgresql://u@db/imagery",
    "AWS_REGION": "eu-west-1",
    "S3_BUCKET": "images",
}


def test_defaults_follow_the_design() -> None:
    settings = Settings.from_env(BASE)
    assert settings.database_url == BASE["DATABASE_URL"]
    assert settings.aws.region == "eu-west-1"
    assert settings.aws.endpoint_url is None
    assert settings.grpc_port == 50051
    assert settings.max_upload_bytes == 10_485_760
    assert settings.upload_url_expiry_seconds == 300
    assert (settings.log_level, settings.log_format) == ("info", "json")


def test_a_service_passes_its_own_default_port() -> None:
    assert Settings.from_env(BASE, default_port=50052).grpc_port == 50052
    assert Settings.from_env({**BASE, "GRPC_PORT": "6000"}, default_port=50052).grpc_port == 6000


@pytest.mark.parametrize("missing", ["DATABASE_URL", "AWS_REGION", "S3_BUCKET"])
def test_a_missing_required_value_names_the_variable(missing: str) -> None:
    env = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing} is not set"):
        Settings.from_env(env)


def test_blank_counts_as_missing() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        Settings.from_env({**BASE, "DATABASE_URL": "  "})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAX_UPLOAD_BYTES", "ten"),
        ("MAX_UPLOAD_BYTES", "0"),
        ("GRPC_PORT", "70000"),
        ("UPLOAD_URL_EXPIRY_SECONDS", "-5"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "loud"),
    ],
)
def test_a_malformed_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{name}="):
        Settings.from_env({**BASE, name: value})


def test_upload_expiry_is_clamped_to_the_s3_seven_day_maximum() -> None:
    settings = Settings.from_env({**BASE, "UPLOAD_URL_EXPIRY_SECONDS": str(30 * 24 * 3600)})
    assert settings.upload_url_expiry_seconds == 7 * 24 * 3600


def test_ids_made_in_the_same_millisecond_share_nothing_guessable() -> None:
    import itertools

    from imagery.common.ids import is_image_id, new_image_id

    ids = [new_image_id() for _ in range(2000)]
    assert all(map(is_image_id, ids)) and len(set(ids)) == len(ids)
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

    def randomness(image_id: str) -> int:
        value = 0
        for char in image_id[10:]:
            value = value * 32 + alphabet.index(char)
        return value

    same_millisecond = [(a, b) for a, b in itertools.pairwise(ids) if a[:10] == b[:10]]
    assert same_millisecond, "the loop made several ids within one millisecond"
    assert all(abs(randomness(a) - randomness(b)) > 2**40 for a, b in same_millisecond), (
        "not the next value of the previous id"
    )


def test_every_operational_setting_is_read_from_the_environment() -> None:
    """Each variable the README's configuration table names reaches the settings."""
    settings = Settings.from_env(
        {
            **BASE,
            "REDIS_URL": "redis://cache:6379/2",
            "GRPC_MAX_CONCURRENT_RPCS": "5",
            "GRPC_MAX_CONNECTION_AGE_MS": "60000",
            "GRPC_MAX_CONNECTION_AGE_GRACE_MS": "1000",
            "DATABASE_ACQUIRE_TIMEOUT_MS": "100",
            "GRPC_HEALTH_PORT": "8081",
            "GRPC_REFLECTION": "off",
            "MTLS_FORWARDED_IDENTITY_HEADER": "X-Forwarded-Client-Cert",
            "PROJECT_RATE_CREATE_PER_MINUTE_DEFAULT": "600",
            "SIGNED_URL_EXPIRY_SECONDS": "900",
        }
    )
    assert settings.redis_url == "redis://cache:6379/2"
    assert settings.grpc_max_concurrent_rpcs == 5
    assert settings.grpc_max_connection_age_ms == 60_000
    assert settings.grpc_max_connection_age_grace_ms == 1_000
    assert settings.database_acquire_timeout_ms == 100
    assert settings.grpc_health_port == 8081
    assert settings.grpc_reflection is False
    assert settings.forwarded_identity_header == "x-forwarded-client-cert"
    policy = settings.project_policy
    assert policy.defaults.rate_create_per_minute == 600
    assert policy.defaults.signed_url_ttl_seconds == 900

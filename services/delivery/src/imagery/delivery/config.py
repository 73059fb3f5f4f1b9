"""DeliveryService settings: the shared ones plus CloudFront signing."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from imagery.common.cdn import PrivateKey, SigningKeyError, base_url_for, load_private_key
from imagery.common.config import ConfigError, Env, Settings, load_service_settings
from imagery.common.presets import DEFAULT_PRESETS_SPEC, Preset, parse_presets

DEFAULT_PORT = 50052


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    base: Settings
    cloudfront_base_url: str
    key_pair_id: str
    private_key: PrivateKey
    hash_algorithm: str
    expiry_seconds: int
    expiry_bucket_seconds: int
    url_cache_size: int
    target_cache_size: int
    signing_threads: int
    presets: tuple[Preset, ...]  # the default profile: projects that chose none
    # DELIVERY_MAX_WATCHERS: WatchImage streams this process serves at once; past it a new
    # one answers RESOURCE_EXHAUSTED SERVER_BUSY with a retry delay. Streams do not count
    # against GRPC_MAX_CONCURRENT_RPCS (the cap on calls in flight).
    max_watchers: int = 5_000
    # DELIVERY_MAX_WATCHERS_PER_PROJECT: of those, the streams one project may hold, so one
    # project cannot starve the others; past it a new one answers RESOURCE_EXHAUSTED
    # QUOTA_EXCEEDED. At most max_watchers (its default follows a lower max_watchers).
    max_watchers_per_project: int = 1_000


def _private_key(env: Env) -> PrivateKey:
    pem = env.raw("CLOUDFRONT_PRIVATE_KEY_PEM")
    path = env.raw("CLOUDFRONT_PRIVATE_KEY_FILE")
    if pem is None and path is None:
        raise ConfigError(
            "CLOUDFRONT_PRIVATE_KEY_PEM is not set: set it (or CLOUDFRONT_PRIVATE_KEY_FILE) "
            "to the private key of the CloudFront key group's public key."
        )
    if pem is None:
        assert path is not None
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"CLOUDFRONT_PRIVATE_KEY_FILE={path!r} cannot be read ({exc.strerror})."
            ) from None
        name = "CLOUDFRONT_PRIVATE_KEY_FILE"
    else:
        data, name = pem.replace("\\n", "\n").encode(), "CLOUDFRONT_PRIVATE_KEY_PEM"
    try:
        return load_private_key(data)
    except SigningKeyError as exc:
        raise ConfigError(f"{name} is not a usable CloudFront signing key: {exc}.") from None


def load_settings(environ: Mapping[str, str] | None = None) -> DeliverySettings:
    return load_service_settings(environ, _build, default_port=DEFAULT_PORT)


def _build(env: Env, base: Settings) -> DeliverySettings:
    expiry = env.integer("SIGNED_URL_EXPIRY_SECONDS", 600, minimum=1)
    watchers = env.integer("DELIVERY_MAX_WATCHERS", 5_000, minimum=1)
    return DeliverySettings(
        base=base,
        cloudfront_base_url=base_url_for(
            env.required(
                "CLOUDFRONT_DOMAIN", "the distribution's domain, e.g. d111111abcdef8.cloudfront.net"
            )
        ),
        key_pair_id=env.required(
            "CLOUDFRONT_KEY_PAIR_ID", "the id of the public key in the key group"
        ),
        private_key=_private_key(env),
        hash_algorithm=env.choice("CLOUDFRONT_HASH_ALGORITHM", "sha1", ("sha1", "sha256")).upper(),
        expiry_seconds=expiry,
        expiry_bucket_seconds=env.integer(
            "SIGNED_URL_BUCKET_SECONDS", min(300, expiry), minimum=1, maximum=expiry
        ),
        url_cache_size=env.integer("SIGNED_URL_CACHE_SIZE", 100_000, minimum=0),
        target_cache_size=env.integer("DOWNLOAD_TARGET_CACHE_SIZE", 100_000, minimum=0),
        signing_threads=env.integer("SIGNING_THREADS", 2, minimum=1, maximum=64),
        presets=parse_presets(env.optional("VARIANT_PRESETS", DEFAULT_PRESETS_SPEC)),
        max_watchers=watchers,
        max_watchers_per_project=env.integer(
            "DELIVERY_MAX_WATCHERS_PER_PROJECT", min(1_000, watchers), minimum=1, maximum=watchers
        ),
    )

"""Who a client certificate names: from gRPC's auth context (a verified peer) and from an
Envoy `x-forwarded-client-cert` header (only read when configured)."""

from __future__ import annotations

import pytest

from imagery.common.grpc.auth import forwarded_identity, peer_identity

SPIFFE = "spiffe://cluster.local/ns/web/sa/frontend"


@pytest.mark.parametrize(
    ("header", "identity"),
    [
        (f"By=spiffe://cluster.local/ns/imagery/sa/delivery;Hash=ab12;URI={SPIFFE}", SPIFFE),
        ('Hash=ab12;Subject="CN=svc,O=Acme";URI=', "svc"),
        ('Subject="O=Acme,OU=Platform,CN=svc"', "svc"),
        (f'Subject="CN=svc,O=Acme";URI={SPIFFE}', SPIFFE),  # the SPIFFE id wins over the CN
        ('Subject="CN=Doe\\, John,O=Acme"', "Doe, John"),  # an RFC 2253 escaped comma
        ('Subject="CN=a \\"quoted\\" name,O=Acme"', 'a "quoted" name'),
        ("Subject=CN=plain", "plain"),
        ('uri="spiffe://cluster.local/ns/a/sa/b"', "spiffe://cluster.local/ns/a/sa/b"),
    ],
)
def test_one_element(header: str, identity: str) -> None:
    assert forwarded_identity(header) == identity


@pytest.mark.parametrize(
    ("header", "identity"),
    [
        (f"URI=spiffe://cluster.local/ns/a/sa/first,URI={SPIFFE}", SPIFFE),
        (f'Subject="CN=first,O=Acme";URI=spiffe://first,By=x;URI={SPIFFE}', SPIFFE),
        ('URI=spiffe://first,By=x;Subject="CN=last,O=Acme,L=Paris"', "last"),
    ],
)
def test_of_several_elements_the_last_wins(header: str, identity: str) -> None:
    assert forwarded_identity(header) == identity


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "By=spiffe://cluster.local/ns/imagery/sa/delivery;Hash=ab12",
        'Subject="O=Acme,OU=no common name"',
        f"URI={SPIFFE},",  # the last element names nobody: no earlier one stands in
    ],
)
def test_no_identity(header: str | None) -> None:
    assert forwarded_identity(header) is None


def test_a_peer_is_its_spiffe_id_else_its_cn() -> None:
    both = {
        "x509_common_name": [b"frontend"],
        "x509_subject_alternative_name": [b"frontend.web.svc", SPIFFE.encode()],
    }
    assert peer_identity(both) == SPIFFE
    other_uri = {
        "x509_common_name": [b"frontend"],
        "x509_subject_alternative_name": [b"https://example.com/not-spiffe"],
    }
    assert peer_identity(other_uri) == "frontend"
    assert peer_identity({"transport_security_type": [b"ssl"]}) is None
    assert peer_identity({}) is None

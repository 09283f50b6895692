"""Response headers every client gets, and CORS only for the origins configured."""

from __future__ import annotations

import httpx

from tests.helpers.stacks import serving_stack

ORIGIN = "https://dash.example"


def test_plain_responses_carry_the_safety_headers_but_no_hsts_or_cors() -> None:
    with serving_stack(models=[]) as stack:
        for path in ("/health/ready", "/models", "/", "/no/such/route"):
            response = httpx.get(f"{stack.http_url}{path}", headers={"Origin": ORIGIN})
            assert response.headers["x-content-type-options"] == "nosniff", path
            assert response.headers["referrer-policy"] == "no-referrer", path
            assert "strict-transport-security" not in response.headers  # plaintext
            assert "access-control-allow-origin" not in response.headers
        assert "content-security-policy" in httpx.get(f"{stack.http_url}/").headers


def test_cors_answers_the_configured_origins_only() -> None:
    with serving_stack(models=[], cors_origins=f"{ORIGIN},https://ops.example") as stack:
        url = f"{stack.http_url}/models"
        preflight = httpx.options(
            url,
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        simple = httpx.get(url, headers={"Origin": ORIGIN})
        assert simple.headers["access-control-allow-origin"] == ORIGIN
        assert "x-request-id" in simple.headers["access-control-expose-headers"].lower()
        stranger = httpx.get(url, headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in stranger.headers

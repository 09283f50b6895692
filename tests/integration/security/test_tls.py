"""TLS and mutual TLS on both ports, with certificates made here: a CA, a server and clients.

Every protocol is called over TLS with a client that checks the server against the
test CA (REST and v2 REST with httpx and tritonclient.http, own gRPC and v2 gRPC with
grpcio and tritonclient.grpc). Mutual TLS refuses a client without a certificate and
one whose certificate another CA signed, on both ports.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from prometheus_client import CollectorRegistry

from care_serve.cli import main
from care_serve.grpc_gen.care_serve.v1 import inference_pb2 as pb
from care_serve.grpc_gen.care_serve.v1 import inference_pb2_grpc as pb_grpc
from care_serve.server import BackgroundStack
from tests.helpers.paths import ROOT
from tests.helpers.stacks import test_settings
from tests.helpers.tls import Authority, Issued, make_authority

IMAGE = (ROOT / "examples" / "shape.png").read_bytes()
CLASSIFIER = "shapes-classifier"


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    return make_authority(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server_cert(ca: Authority) -> Issued:
    return ca.issue("server", server=True)


@pytest.fixture(scope="module")
def tls_stack(server_cert: Issued) -> Iterator[BackgroundStack]:
    settings = test_settings(
        models=[CLASSIFIER], tls_cert=server_cert.cert, tls_key=server_cert.key
    )
    with BackgroundStack(settings, CollectorRegistry()) as stack:
        yield stack


@pytest.fixture(scope="module")
def mtls_stack(ca: Authority, server_cert: Issued) -> Iterator[BackgroundStack]:
    settings = test_settings(
        models=[CLASSIFIER],
        tls_cert=server_cert.cert,
        tls_key=server_cert.key,
        tls_client_ca=ca.cert_path,
    )
    with BackgroundStack(settings, CollectorRegistry()) as stack:
        yield stack


def _context(ca: Authority, client: Issued | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca.cert_path))
    if client is not None:
        context.load_cert_chain(client.cert, client.key)
    return context


def _classify_grpc(target: str, credentials: grpc.ChannelCredentials) -> int:
    with grpc.secure_channel(target, credentials) as channel:
        reply = pb_grpc.InferenceServiceStub(channel).Classify(
            pb.ClassifyRequest(image=IMAGE), timeout=30
        )
    return len(reply.predictions)


def test_every_protocol_over_tls(tls_stack: BackgroundStack, ca: Authority) -> None:
    url = tls_stack.http_url
    assert url.startswith("https://")
    rest = httpx.post(f"{url}/classify", content=IMAGE, verify=_context(ca))
    assert rest.status_code == 200 and rest.json()["predictions"]
    assert rest.headers["strict-transport-security"].startswith("max-age=")
    assert rest.headers["x-content-type-options"] == "nosniff"
    for page in ("/", "/docs", "/openapi.json"):
        assert httpx.get(f"{url}{page}", verify=_context(ca)).status_code == 200, page

    assert _classify_grpc(tls_stack.grpc_target, grpc.ssl_channel_credentials(ca.cert_pem)) > 0

    image = thttp.InferInput("image", [1], "BYTES")
    image.set_data_from_numpy(np.array([IMAGE], dtype=object))
    http_client = thttp.InferenceServerClient(
        url.removeprefix("https://"), ssl=True, ssl_options={"ca_certs": str(ca.cert_path)}
    )
    try:
        probabilities = http_client.infer(CLASSIFIER, [image]).as_numpy("probabilities")
    finally:
        http_client.close()
    assert probabilities.shape[0] == 1

    grpc_image = tgrpc.InferInput("image", [1], "BYTES")
    grpc_image.set_data_from_numpy(np.array([IMAGE], dtype=object))
    grpc_client = tgrpc.InferenceServerClient(
        tls_stack.grpc_target, ssl=True, root_certificates=str(ca.cert_path)
    )
    try:
        assert grpc_client.is_server_ready()
        result = grpc_client.infer(CLASSIFIER, [grpc_image]).as_numpy("probabilities")
    finally:
        grpc_client.close()
    np.testing.assert_allclose(result, probabilities, rtol=1e-5)


def test_plaintext_clients_are_not_served_on_a_tls_port(tls_stack: BackgroundStack) -> None:
    plain = tls_stack.http_url.replace("https://", "http://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{plain}/health/live", timeout=5)
    with (
        grpc.insecure_channel(tls_stack.grpc_target) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        pb_grpc.InferenceServiceStub(channel).Classify(pb.ClassifyRequest(image=IMAGE), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_serves_clients_of_its_ca_only(
    mtls_stack: BackgroundStack, ca: Authority, tmp_path: Path
) -> None:
    url = mtls_stack.http_url
    client = ca.issue("client", server=False)
    stranger_ca = make_authority(tmp_path, "stranger")
    stranger = stranger_ca.issue("client", server=False)

    ok = httpx.post(f"{url}/classify", content=IMAGE, verify=_context(ca, client))
    assert ok.status_code == 200
    for who in (None, stranger):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/health/live", verify=_context(ca, who), timeout=5)

    target = mtls_stack.grpc_target
    good = grpc.ssl_channel_credentials(ca.cert_pem, client.key_pem, client.cert_pem)
    assert _classify_grpc(target, good) > 0
    for creds in (
        grpc.ssl_channel_credentials(ca.cert_pem),
        grpc.ssl_channel_credentials(ca.cert_pem, stranger.key_pem, stranger.cert_pem),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            _classify_grpc(target, creds)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def _serve_fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["serve", "--model-store", str(ROOT / "model_store"), "--http-port", "0",
                 "--grpc-port", "0", *args])  # fmt: skip
    assert code == 1
    return capsys.readouterr().err


def test_unusable_tls_files_refuse_start_naming_the_file(
    ca: Authority, server_cert: Issued, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = ca.issue("other", server=True)
    missing = tmp_path / "nope.pem"
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    cert, key = str(server_cert.cert), str(server_cert.key)

    err = _serve_fails(capsys, "--tls-cert", str(missing), "--tls-key", key)
    assert f"TLS certificate {missing} (--tls-cert) does not exist" in err
    err = _serve_fails(capsys, "--tls-cert", cert, "--tls-key", str(other.key))
    assert f"TLS key {other.key} (--tls-key) does not belong to the certificate {cert}" in err
    err = _serve_fails(capsys, "--tls-cert", str(junk), "--tls-key", key)
    assert f"{junk} (--tls-cert) holds no PEM certificate" in err
    err = _serve_fails(capsys, "--tls-cert", cert, "--tls-key", str(junk))
    assert f"TLS key {junk} (--tls-key) is not a PEM private key" in err
    err = _serve_fails(capsys, "--tls-cert", cert, "--tls-key", key, "--tls-client-ca", str(junk))
    assert f"client CA {junk} (--tls-client-ca) holds no PEM certificate" in err
    err = _serve_fails(capsys, "--tls-cert", cert)
    assert "tls_cert and tls_key go together" in err

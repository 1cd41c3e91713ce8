"""Endpoints that are not there, or not what they claim: each failure says what happened
(typed: kind, status), and an endpoint that never answered stops the batch in one line."""

from __future__ import annotations

import datetime
import http.server
import socket
import ssl
import threading

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from rare_core.errors import LLMEndpointError
from rare_core.llm import APILLMServing_request, LLMRequest
from rare_core.llm.transport import UNREACHABLE_ATTEMPTS
from rare_core.llm.failures import FailureKind
from rare_sim import FaultSpec

CHAT = "/v1/chat/completions"


def requests_for(n: int) -> list[LLMRequest]:
    return [LLMRequest(messages=[{"role": "user", "content": f"number {i} "}], prompt_version="t/1") for i in range(n)]


def client(url: str, tmp_path, **overrides) -> APILLMServing_request:
    settings = dict(api_url=url, model_name="test-model", max_workers=4, timeout=5.0, backoff_base=0.01,
                    cache_path=str(tmp_path / "cache.sqlite"))
    settings.update(overrides)
    return APILLMServing_request(**settings)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed when the block ends: nothing listens there


class Accepts:
    """A server counting the connections it accepts; answers according to ``handler``."""

    def __init__(self, handler=None, tls: ssl.SSLContext | None = None) -> None:
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def setup(self):
                outer.connections += 1
                super().setup()

            def do_POST(self):
                (handler or _ok)(self)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _ok(handler) -> None:
    handler.send_response(200)
    handler.end_headers()


def self_signed(tmp_path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return ctx


def test_nothing_listening_stops_the_batch_naming_the_url(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(LLMEndpointError) as caught:
        client(url, tmp_path).chat(requests_for(20))
    message = str(caught.value)
    assert url in message and "connection refused" in message and "timeout" not in message
    assert "\n" not in message


def test_an_unknown_host_says_so(tmp_path):
    with pytest.raises(LLMEndpointError, match="name not resolved"):
        client("http://no-such-host.invalid/v1", tmp_path).chat(requests_for(3))


def test_a_certificate_that_does_not_verify_is_a_tls_failure(tmp_path):
    server = Accepts(tls=self_signed(tmp_path))
    try:
        with pytest.raises(LLMEndpointError, match="TLS failure: .*certificate"):
            client(server.url, tmp_path).chat(requests_for(3))
    finally:
        server.close()


def test_a_server_that_never_answers_times_out_with_the_setting(tmp_path):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)  # accepts (the kernel does), never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        resp = client(url, tmp_path, timeout=0.3, max_retries=1).chat(requests_for(1)).responses[0]
    finally:
        silent.close()
    assert resp.failure.kind == FailureKind.TIMEOUT and resp.failure.retryable
    assert resp.error == "timed out after 0.3s (gave up after 1 retries)"


def test_an_html_page_is_not_a_chat_completion(sim, tmp_path):
    sim.inject([FaultSpec(kind="html_page", count=1, match="number 1 ")])
    batch = client(sim.base_url, tmp_path).chat(requests_for(3))
    failed = batch.responses[1]
    assert failed.failure.kind == FailureKind.NOT_COMPLETION and failed.failure.status is None
    assert failed.error.startswith("the endpoint answered text/html, not a chat completion: '<!DOCTYPE html>")
    assert len(failed.error) < 160
    assert batch.responses[0].ok and batch.responses[2].ok
    assert sim.stats().requests_by_path[CHAT] == 3  # a login page is not retried


def test_an_endpoint_that_only_answers_html_stops_the_batch(sim, tmp_path):
    sim.inject([FaultSpec(kind="html_page", count=100)])
    with pytest.raises(LLMEndpointError, match="text/html, not a chat completion"):
        client(sim.base_url, tmp_path, max_workers=1).chat(requests_for(20))
    assert sim.stats().requests_by_path[CHAT] <= UNREACHABLE_ATTEMPTS + 1  # + the one in flight


def test_an_http_error_keeps_its_status_and_the_endpoints_message(sim, tmp_path):
    resp = client(sim.base_url + "/missing-prefix", tmp_path).chat(requests_for(1)).responses[0]
    assert resp.failure.kind == FailureKind.HTTP and resp.failure.status == 404 and not resp.failure.retryable
    assert resp.error.startswith("HTTP 404: ")


def test_an_endpoint_that_answered_before_is_retried_when_it_goes_away(sim, tmp_path):
    llm = client(sim.base_url, tmp_path, max_retries=2)
    assert llm.chat(requests_for(1)).responses[0].ok
    llm.config = llm.config.model_copy(update={"base_url": f"http://127.0.0.1:{closed_port()}/v1"})
    resp = llm.chat(requests_for(2)).responses[1]  # a blip: rows fail one by one, the batch goes on
    assert resp.failure.kind == FailureKind.REFUSED
    assert resp.error.endswith("(gave up after 2 retries)")

"""Real HTTP object stores on loopback for the bucket plugins' tests.

S3: moto's server (``ThreadedMotoServer``). OSS: no emulator exists, so the same moto backend
is served behind ``OssAdapter``, a WSGI layer that turns OSS-signed requests into the S3
requests moto understands (signatures are checked by neither: moto ignores them). Both servers
run in this process and share moto's buckets: a test can write with boto3 and read with OSS.
"""
from __future__ import annotations

import logging
import re
import secrets
import threading
from typing import Callable
from urllib.parse import parse_qsl, urlencode

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from werkzeug.serving import make_server

# moto checks no signature: credentials made per run, so none is written in the source
KEY_ID, SECRET = "AKID" + secrets.token_hex(8).upper(), secrets.token_urlsafe(24)
_AWS_AUTH = ("AWS4-HMAC-SHA256 Credential={key}/20260101/us-east-1/s3/aws4_request, "
             "SignedHeaders=host, Signature=" + "0" * 64)
_OSS_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request in the test output
_XMLNS = re.compile(rb'\s+xmlns="http://s3\.amazonaws\.com/doc/2006-03-01/?"')


def start_s3() -> tuple[ThreadedMotoServer, str]:
    """moto's S3 server on a free loopback port; returns it and its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


class OssAdapter:
    """WSGI: OSS requests in, S3 requests to moto, OSS-readable answers out.

    Requests: ``Authorization: OSS4-HMAC-SHA256 Credential=…`` (or a presigned URL's
    ``x-oss-*`` query) becomes an AWS-style header naming the same access key; empty query
    values (``?list-type=2&prefix=``) are dropped, as moto reads ``prefix=`` as a parameter
    set to ``None``. Answers: XML without the S3 namespace (the OSS SDK reads bare tags).
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        query = parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        signed_by = dict(query).get("x-oss-credential", "") + " " + auth
        key = m.group(1) if (m := _OSS_CREDENTIAL.search("Credential=" + signed_by.strip())) else KEY_ID
        environ["HTTP_AUTHORIZATION"] = _AWS_AUTH.format(key=key)
        keep = [(k, v) for k, v in query if not k.startswith("x-oss-") and (v or k in _FLAG_PARAMS)]
        environ["QUERY_STRING"] = urlencode(keep)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        headers = captured["headers"]
        if any(k.lower() == "content-type" and "xml" in v for k, v in headers):
            body = _XMLNS.sub(b"", body)
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        start_response(captured["status"], headers)
        return [body]


# sub-resources sent without a value (``?uploads``, ``?delete``): kept as they are
_FLAG_PARAMS = {"uploads", "delete", "acl", "location", "bucketInfo", "stat", "versioning", "tagging"}


class Faults:
    """WSGI: answers 503 to the requests ``fail(environ)`` picks, or to those whose answer
    ``fail_answer(body)`` picks (a store failing part way)."""

    def __init__(self, app):
        self.app = app
        self.fail: Callable[[dict], bool] = lambda environ: False
        self.fail_answer: Callable[[bytes], bool] = lambda body: False

    def __call__(self, environ, start_response):
        if self.fail(environ):
            return self._unavailable(start_response)
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        body = b"".join(self.app(environ, capture))
        if self.fail_answer(body):
            return self._unavailable(start_response)
        start_response(captured["status"], captured["headers"])
        return [body]

    @staticmethod
    def _unavailable(start_response):
        body = b"<Error><Code>ServiceUnavailable</Code><Message>injected by the test</Message></Error>"
        start_response("503 Service Unavailable", [("Content-Type", "application/xml"),
                                                    ("Content-Length", str(len(body)))])
        return [body]


class _Serving:
    def __init__(self, app):
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.endpoint = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join()


def start_oss() -> _Serving:
    """moto behind ``OssAdapter`` on a free loopback port (``.endpoint``, ``.stop()``)."""
    return _Serving(OssAdapter(DomainDispatcherApplication(create_backend_app)))


def start_faulty(scheme: str) -> tuple[_Serving, Faults]:
    """The same store (S3 or OSS) behind ``Faults``: set ``faults.fail`` to break requests."""
    app = DomainDispatcherApplication(create_backend_app)
    faults = Faults(OssAdapter(app) if scheme == "oss" else app)
    return _Serving(faults), faults

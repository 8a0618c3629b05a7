"""An AWS endpoint that misbehaves on purpose: it forwards the first `passes` requests to a real
(moto) endpoint, then answers every later one with an AWS JSON error (throttling, denial, a KMS
refusal). Lets a test put a failure exactly mid-fetch."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request


class FaultyEndpoint:
    def __init__(self, code: str, message: str = "", *, upstream: str | None = None, passes: int = 0,
                 status: int = 400):
        self.requests = 0
        payload = json.dumps({"__type": code, "message": message or f"{code} from the test endpoint"}).encode()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                outer.requests += 1
                if upstream and outer.requests <= passes:
                    forwarded = urllib.request.Request(upstream + self.path, data=body, method="POST",
                                                       headers=dict(self.headers.items()))
                    with urllib.request.urlopen(forwarded, timeout=10) as answer:
                        code_out, body_out = answer.status, answer.read()
                else:
                    code_out, body_out = status, payload
                self.send_response(code_out)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(body_out)))
                self.end_headers()
                self.wfile.write(body_out)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)

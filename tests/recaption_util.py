"""An "oracle" captioner for the tests: a stdlib HTTP server speaking the OpenAI chat-completions
protocol that answers with the caption registered for the pictures it is sent (by their bytes).

It stands in for a VLM that writes good captions, so the pipeline's "better caption wins" path
can be exercised end to end through the real HTTP client; the tiny VLM (random weights) only
writes noise, which CLIP rightly never prefers.
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class OracleServer:
    def __init__(self) -> None:
        self.captions: dict[str, str] = {}
        self.requests: list[dict] = []
        oracle = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                oracle.requests.append(body)
                parts = body["messages"][0]["content"]
                images = [base64.b64decode(p["image_url"]["url"].split(",", 1)[1]) for p in parts
                          if p["type"] == "image_url"]
                text = oracle.captions.get(key(images), "")
                data = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def key(images: list[bytes]) -> str:
    h = hashlib.sha256()
    for im in images:
        h.update(hashlib.sha256(im).digest())
    return h.hexdigest()

"""`python -m captioners.serve --model PATH --port P`: a VLM behind the OpenAI chat-completions protocol.

The protocol vLLM and SGLang speak, served by the standard library's threaded HTTP server over
any local `AutoModelForImageTextToText` checkpoint (the tests use captioners.tiny_vlm):

    GET  /v1/models              the one served model
    GET  /health                 200 once the model is loaded
    POST /v1/chat/completions    messages with text and image_url parts (base64 data URLs),
                                 max_tokens, temperature, seed; non-streaming

Requests are batched as an inference server would: one generation thread takes the requests
waiting (up to --max-batch, lingering --batch-wait-ms for more) and runs them through one
left-padded `generate`; handler threads only parse, wait and reply. Sampled text therefore
depends on batch-mates; `seed` is honoured exactly with --max-batch 1.

Fault injection, for tests of the client's failure handling. Faults are decided by the
request's arrival number n (0, 1, 2, ...), so a run is reproducible:

    --fault-sequence 500,hang,ok    the first requests get these, in order
    --fault 500:0.2,hang:0.1        after the sequence, a share of requests, spread evenly
                                    (request n gets the fault whose interval holds frac((n+1) * 0.618...))

    500 / 503      an error status with a JSON error body
    429            Too Many Requests with Retry-After: --retry-after
    hang           sleep --hang-s before answering (past the client's timeout)
    malformed      200 with a truncated JSON body
    empty          200 with an empty assistant message
    drop           close the connection without a response
    ok             no fault
"""
from __future__ import annotations

import argparse
import base64
import io
import json
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Optional

from captioners.backends import load_vlm, vlm_generate

FAULTS = ("500", "503", "429", "hang", "malformed", "empty", "drop", "ok")
GOLDEN = 0.6180339887498949


def parse_faults(spec: Optional[str]) -> list[tuple[str, float]]:
    """'500:0.2,hang:0.1' -> [('500', 0.2), ('hang', 0.1)] (shares add up to at most 1)."""
    out = []
    for item in filter(None, (spec or "").split(",")):
        name, _, share = item.partition(":")
        if name not in FAULTS or not share:
            raise ValueError(f"fault {item!r}: expected NAME:SHARE with NAME in {FAULTS}")
        out.append((name, float(share)))
    if sum(s for _, s in out) > 1.0 + 1e-9:
        raise ValueError("fault shares add up to more than 1")
    return out


class FaultPlan:
    def __init__(self, sequence: list[str], rates: list[tuple[str, float]]) -> None:
        bad = [f for f in sequence if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown faults {bad}; known: {FAULTS}")
        self.sequence, self.rates = sequence, rates
        self.counts: dict[str, int] = {}
        self._n = 0
        self._lock = threading.Lock()

    def fault_of(self, n: int) -> str:
        if n < len(self.sequence):
            return self.sequence[n]
        u = ((n + 1) * GOLDEN) % 1.0
        edge = 0.0
        for name, share in self.rates:
            edge += share
            if u < edge:
                return name
        return "ok"

    def next(self) -> str:
        with self._lock:
            fault = self.fault_of(self._n)
            self._n += 1
            self.counts[fault] = self.counts.get(fault, 0) + 1
        return fault


@dataclass
class _Job:
    prompt: str
    images: list
    max_tokens: int
    temperature: float
    seed: Optional[int]
    done: threading.Event = field(default_factory=threading.Event)
    text: Optional[str] = None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    error: Optional[str] = None


class VLMEngine:
    """The model and its batching generation thread."""

    def __init__(self, model_path: str, device: str = "cpu", max_batch: int = 8, batch_wait_ms: float = 5.0,
                 trust_remote_code: bool = False) -> None:
        self.processor, self.model = load_vlm(model_path, device, trust_remote_code=trust_remote_code)
        self.device = device
        self.eos = self.model.generation_config.eos_token_id
        self.max_batch, self.batch_wait_s = max_batch, batch_wait_ms / 1000.0
        self.queue: "queue.Queue[_Job]" = queue.Queue()
        self.batches = 0
        self.batched_requests = 0
        self._thread = threading.Thread(target=self._loop, name="generate", daemon=True)
        self._thread.start()

    def submit(self, job: _Job) -> _Job:
        self.queue.put(job)
        job.done.wait()
        return job

    def stop(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch:
                try:
                    job = self.queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if job is None:
                    self.queue.put(None)   # stop after this batch
                    break
                batch.append(job)
            groups: dict[tuple, list[_Job]] = {}
            for job in batch:
                groups.setdefault((job.temperature, job.max_tokens), []).append(job)
            for jobs in groups.values():
                try:
                    self._generate(jobs)
                except Exception as e:  # noqa: BLE001 - reported to each caller as a 500
                    for job in jobs:
                        job.error = f"{type(e).__name__}: {e}"
                for job in jobs:
                    job.done.set()

    def _generate(self, jobs: list[_Job]) -> None:
        self.batches += 1
        self.batched_requests += len(jobs)
        images = [im for job in jobs for im in job.images]
        inputs = self.processor(text=[j.prompt for j in jobs], images=images or None, padding=True,
                                return_tensors="pt").to(self.device)
        out = vlm_generate(self.model, inputs, jobs[0].max_tokens, jobs[0].temperature, jobs[0].seed)
        prompt_len = inputs["input_ids"].shape[1]
        mask = inputs["attention_mask"]
        for i, job in enumerate(jobs):
            new = out[i, prompt_len:].tolist()
            eos = self.eos if isinstance(self.eos, list) else [self.eos]
            stop = next((k for k, t in enumerate(new) if t in eos), None)
            job.finish_reason = "length" if stop is None else "stop"
            new = new if stop is None else new[:stop]
            job.text = self.processor.tokenizer.decode(new, skip_special_tokens=True)
            job.prompt_tokens = int(mask[i].sum())
            job.completion_tokens = len(new)

    def render(self, messages: list) -> tuple[str, list]:
        """OpenAI messages -> (prompt text, PIL images); ValueError on what it cannot use."""
        from PIL import Image

        converted, images = [], []
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        for m in messages:
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
                raise ValueError("each message needs a role of system, user or assistant")
            content = m.get("content")
            if isinstance(content, str):
                converted.append({"role": m["role"], "content": content})
                continue
            if not isinstance(content, list):
                raise ValueError("content must be a string or a list of parts")
            parts = []
            for p in content:
                kind = p.get("type") if isinstance(p, dict) else None
                if kind == "text":
                    parts.append({"type": "text", "text": str(p.get("text", ""))})
                elif kind == "image_url":
                    url = (p.get("image_url") or {}).get("url", "")
                    if not url.startswith("data:") or ";base64," not in url:
                        raise ValueError("image_url must be a base64 data URL (this server is offline)")
                    data = base64.b64decode(url.split(";base64,", 1)[1], validate=True)
                    images.append(Image.open(io.BytesIO(data)).convert("RGB"))
                    parts.append({"type": "image"})
                else:
                    raise ValueError(f"unsupported content part {kind!r}")
            converted.append({"role": m["role"], "content": parts})
        prompt = self.processor.apply_chat_template(converted, add_generation_prompt=True, tokenize=False)
        return prompt, images


def make_handler(engine: VLMEngine, model_name: str, faults: FaultPlan, hang_s: float, retry_after: float,
                 stopping: threading.Event):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "keye-serve/1"

        def log_message(self, fmt, *args) -> None:   # quiet: tests start many requests
            pass

        def _send(self, status: int, obj=None, raw: Optional[bytes] = None, headers: Optional[dict] = None) -> None:
            body = raw if raw is not None else json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):   # the client gave up (its timeout)
                self.close_connection = True

        def _error(self, status: int, message: str, kind: str = "server_error", headers=None) -> None:
            self._send(status, {"error": {"message": message, "type": kind, "code": status}}, headers=headers)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [
                    {"id": model_name, "object": "model", "created": 0, "owned_by": "keye-data-engine"}]})
            elif self.path == "/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, f"no route {self.path}", "not_found")

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(404, f"no route {self.path}", "not_found")
                return
            fault = faults.next()
            if fault in ("500", "503"):
                self._error(int(fault), "injected fault")
                return
            if fault == "429":
                self._error(429, "injected rate limit", "rate_limit", headers={"Retry-After": f"{retry_after:g}"})
                return
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            if fault == "hang":
                stopping.wait(hang_s)
            try:
                req = json.loads(body)
                prompt, images = engine.render(req.get("messages"))
                max_tokens = int(req.get("max_tokens") or req.get("max_completion_tokens") or 64)
                temperature = float(req.get("temperature", 1.0))
                seed = req.get("seed")
            except (ValueError, TypeError, AttributeError) as e:
                self._error(400, f"bad request: {e}", "invalid_request_error")
                return
            if req.get("model") not in (None, model_name):
                self._error(404, f"model {req.get('model')!r} not found; serving {model_name!r}", "not_found")
                return
            job = engine.submit(_Job(prompt, images, max_tokens, temperature, None if seed is None else int(seed)))
            if job.error:
                self._error(500, job.error)
                return
            if fault == "malformed":
                self._send(200, raw=b'{"id": "chatcmpl-x", "choices": [{"message": {"role": "assis')
                return
            text = "" if fault == "empty" else job.text
            self._send(200, {
                "id": f"chatcmpl-{time.monotonic_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "finish_reason": job.finish_reason}],
                "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens,
                          "total_tokens": job.prompt_tokens + job.completion_tokens}})

    return Handler


class Server:
    """The HTTP server in a background thread (tests and benchmarks); `python -m` runs it in the foreground."""

    def __init__(self, model_path: Optional[str], host: str = "127.0.0.1", port: int = 0, *,
                 model_name: Optional[str] = None, fault: Optional[str] = None, fault_sequence: Optional[str] = None,
                 hang_s: float = 30.0, retry_after: float = 0.0, max_batch: int = 8, batch_wait_ms: float = 5.0,
                 device: str = "cpu", trust_remote_code: bool = False, engine=None) -> None:
        """`engine` replaces the model (anything with render / submit / stop, e.g. the synthetic
        reasoner of mixture/reasoner.py); then model_path is unused."""
        if engine is None and not model_path:
            raise ValueError("Server needs a model_path or an engine")
        self.model_name = model_name or os.path.basename(os.path.normpath(model_path or "engine"))
        self.engine = engine or VLMEngine(model_path, device, max_batch, batch_wait_ms, trust_remote_code)
        self.faults = FaultPlan([f for f in (fault_sequence or "").split(",") if f], parse_faults(fault))
        self.stopping = threading.Event()
        handler = make_handler(self.engine, self.model_name, self.faults, hang_s, retry_after, self.stopping)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: Optional[threading.Thread] = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="serve", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.engine.stop()

    def __enter__(self) -> "Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m captioners.serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="local model folder (AutoModelForImageTextToText + AutoProcessor)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0: any free port (printed)")
    ap.add_argument("--served-model-name", default=None, help="default: the folder's name")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--batch-wait-ms", type=float, default=5.0)
    ap.add_argument("--fault", default=None, help="e.g. 500:0.3,hang:0.1,malformed:0.1")
    ap.add_argument("--fault-sequence", default=None, help="e.g. 500,500,ok: faults of the first requests")
    ap.add_argument("--hang-s", type=float, default=30.0)
    ap.add_argument("--retry-after", type=float, default=0.0, help="Retry-After seconds sent with 429")
    ap.add_argument("--trust-remote-code", action="store_true")
    args = ap.parse_args(argv)
    server = Server(args.model, args.host, args.port, model_name=args.served_model_name, fault=args.fault,
                    fault_sequence=args.fault_sequence, hang_s=args.hang_s, retry_after=args.retry_after,
                    max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, device=args.device,
                    trust_remote_code=args.trust_remote_code)
    return serve_forever(server)


def serve_forever(server: Server) -> int:
    """Announce the URL (`READY <base_url> model=<name>`), serve until interrupted, stop."""
    print(f"READY {server.base_url} model={server.model_name}", flush=True)
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Recaptioners: one interface, several backends (`recaption.backend`).

    class Recaptioner(Protocol):
        captioner_id: str                                  # recorded in provenance
        def setup(self) -> None                            # once per worker process
        def caption(self, requests) -> list[CaptionResult] # one result per request, in order; never raises
        def close(self) -> None

A `CaptionRequest` is a rendered prompt plus JPEG pictures (one image, or a video's frames in
order). A `CaptionResult` has the new text, or the last error after the retries were spent,
or `budget_exhausted` when the worker's request budget ran out before it was tried.

Backends:

1. `openai`: an OpenAI-compatible chat-completions endpoint (`POST {base_url}/chat/completions`),
   which is how vLLM and SGLang serve Keye-VL and other VLMs. Pictures go as base64 data URLs
   in `image_url` parts (a video as its frames, in order, then the prompt). Requests run on a
   thread pool of `concurrency`; each is retried with exponential backoff and full jitter on
   429 (honouring Retry-After), 5xx, timeouts, connection errors, malformed JSON and empty text;
   other 4xx fail at once. `timeout_s` bounds each whole request (connect, send, headers and
   body: a server that drips bytes is cut off at the deadline); `request_budget` caps
   the requests (retries included) one worker process sends. Keep-alive connections are reused
   per thread.
2. `transformers`: an in-process `AutoModelForImageTextToText` (e.g. Qwen2-VL, or Keye-VL with
   `trust_remote_code`) for GPU workers: batched, left-padded generation; a failed or empty
   generation is retried alone (new seed) up to `max_retries` times.
3. `trainer`: a checkpoint of the bundled trainer (`recaption.trainer.checkpoint`). Its module,
   `trainer/recaption.py`, registers itself and is imported only when a recipe names it
   (`LAZY_BACKENDS`), so curation workers on the other backends never import the trainer.

The pipeline shares one backend per worker process between its threads
(`apache_beam.utils.shared`), so `concurrency` and `request_budget` are per process.
"""
from __future__ import annotations

import base64
import datetime
import email.utils
import http.client
import io
import json
import os
import random
import socket
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional, Protocol, Sequence

from schemas.config import OpenAIBackendConfig, RecaptionConfig, TransformersBackendConfig

RETRY_STATUS = {429, 500, 502, 503, 504}


@dataclass
class CaptionRequest:
    key: str                   # row id and rate, e.g. "3f2a...@1fps": logs and seeds
    prompt_id: str
    prompt: str                # rendered prompt text
    images: list[bytes]        # JPEG bytes: one image, or a video's frames in order
    seed: int
    fps: Optional[float] = None


@dataclass
class CaptionResult:
    text: Optional[str]                 # stripped and non-empty when it worked
    error: Optional[str] = None         # the last error, when text is None
    attempts: int = 0                   # requests sent for it
    budget_exhausted: bool = False      # not (fully) tried: the worker's request budget ran out

    @property
    def ok(self) -> bool:
        return self.text is not None


class Recaptioner(Protocol):
    captioner_id: str

    def setup(self) -> None: ...

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]: ...

    def close(self) -> None: ...


BACKENDS: dict[str, Callable[[RecaptionConfig], Recaptioner]] = {}


def register_backend(name: str):
    def deco(factory):
        BACKENDS[name] = factory
        return factory
    return deco


LAZY_BACKENDS = {"trainer": "trainer.recaption"}   # backend -> module that registers it when imported


def make_backend(cfg: RecaptionConfig) -> Recaptioner:
    if cfg.backend not in BACKENDS and cfg.backend in LAZY_BACKENDS:
        import importlib

        importlib.import_module(LAZY_BACKENDS[cfg.backend])
    if cfg.backend not in BACKENDS:
        raise ValueError(f"no recaption backend {cfg.backend!r}; registered: {sorted(BACKENDS)}")
    return BACKENDS[cfg.backend](cfg)


def default_captioner_id(cfg: RecaptionConfig) -> str:
    if cfg.captioner_id:
        return cfg.captioner_id
    model = {"openai": cfg.openai.model, "transformers": cfg.transformers.model,
             "trainer": cfg.trainer.checkpoint}[cfg.backend]
    return f"{cfg.backend}:{model}"


# --- OpenAI-compatible HTTP ---------------------------------------------------------------------
class MalformedResponse(ValueError):
    pass


def parse_chat_completion(data: bytes) -> str:
    """The assistant text of a chat-completions response body; MalformedResponse if there is none."""
    try:
        obj = json.loads(data)
        message = obj["choices"][0]["message"]
        content = message["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise MalformedResponse(f"malformed response ({type(e).__name__}): {data[:120]!r}") from None
    if isinstance(content, list):   # content parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise MalformedResponse(f"message content is {type(content).__name__}")
    return content


def chat_body(req: CaptionRequest, model: str, max_tokens: int, temperature: float) -> bytes:
    parts = [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(img).decode()}}
             for img in req.images]
    parts.append({"type": "text", "text": req.prompt})
    return json.dumps({"model": model, "messages": [{"role": "user", "content": parts}],
                       "max_tokens": max_tokens, "temperature": temperature, "seed": req.seed}).encode()


class OpenAIChatBackend:
    """Chat completions over HTTP with a concurrency limit, retries, timeouts and a request budget."""

    def __init__(self, cfg: OpenAIBackendConfig, *, max_new_tokens: int, temperature: float,
                 captioner_id: str, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.captioner_id = captioner_id
        self.sleep = sleep
        url = urllib.parse.urlsplit(cfg.base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError(f"recaption.openai.base_url {cfg.base_url!r} is not an http(s) URL")
        self.https = url.scheme == "https"
        self.host, self.port = url.hostname, url.port or (443 if self.https else 80)
        self.path = f"{url.path}/chat/completions"
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pool: Optional[ThreadPoolExecutor] = None
        self.requests_sent = 0
        self.stats = {"retries": 0, "timeouts": 0, "status_429": 0, "status_5xx": 0, "malformed": 0,
                      "empty": 0, "connection_errors": 0}

    def setup(self) -> None:
        if self.cfg.api_key_env:
            key = os.environ.get(self.cfg.api_key_env)
            if not key:
                raise RuntimeError(f"recaption.openai.api_key_env: ${self.cfg.api_key_env} is not set")
            self.headers["Authorization"] = f"Bearer {key}"
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.cfg.concurrency, thread_name_prefix="recaption")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        if self._pool is None:
            self.setup()
        return list(self._pool.map(self._one, requests))

    # one request, with its retries
    def _take_budget(self) -> bool:
        with self._lock:
            if self.cfg.request_budget and self.requests_sent >= self.cfg.request_budget:
                return False
            self.requests_sent += 1
            return True

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1

    def backoff_s(self, attempt: int, retry_after: Optional[float] = None) -> float:
        delay = random.random() * min(self.cfg.backoff_max_s, self.cfg.backoff_base_s * 2 ** attempt)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cfg.backoff_max_s)

    def _one(self, req: CaptionRequest) -> CaptionResult:
        body = chat_body(req, self.cfg.model, self.max_new_tokens, self.temperature)
        error = "not tried"
        for attempt in range(self.cfg.max_retries + 1):
            if attempt:
                self._count("retries")
            if not self._take_budget():
                return CaptionResult(None, f"request budget of {self.cfg.request_budget} exhausted "
                                     f"(last error: {error})" if attempt else "request budget exhausted",
                                     attempt, budget_exhausted=True)
            retry_after = None
            try:
                status, headers, data = self._post(body)
            except (socket.timeout, TimeoutError):
                error = f"timeout after {self.cfg.timeout_s:g} s"
                self._count("timeouts")
            except (OSError, http.client.HTTPException) as e:
                error = f"connection error: {type(e).__name__}: {e}"
                self._count("connection_errors")
            else:
                if status == 200:
                    try:
                        text = parse_chat_completion(data).strip()
                    except MalformedResponse as e:
                        error = str(e)
                        self._count("malformed")
                    else:
                        if text:
                            return CaptionResult(text, None, attempt + 1)
                        error = "empty generation"
                        self._count("empty")
                elif status in RETRY_STATUS:
                    error = f"HTTP {status}: {data[:200].decode('utf-8', 'replace')}"
                    self._count("status_429" if status == 429 else "status_5xx")
                    retry_after = _retry_after(headers.get("Retry-After"))
                else:
                    return CaptionResult(None, f"HTTP {status} (not retried): "
                                         f"{data[:200].decode('utf-8', 'replace')}", attempt + 1)
            if attempt < self.cfg.max_retries:
                self.sleep(self.backoff_s(attempt, retry_after))
        return CaptionResult(None, error, self.cfg.max_retries + 1)

    def _connection(self, fresh: bool = False) -> tuple[http.client.HTTPConnection, bool]:
        """(this thread's keep-alive connection, whether it was used before)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not fresh:
            return conn, True
        if conn is not None:
            conn.close()
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=self.cfg.timeout_s)
        self._local.conn = conn
        return conn, False

    def _post(self, body: bytes) -> tuple[int, dict, bytes]:
        conn, reused = self._connection()
        try:
            return self._roundtrip(conn, body)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            if not reused:
                self._drop()
                raise
            # the server closed an idle keep-alive connection: once more on a new one, not a retry
            conn, _ = self._connection(fresh=True)
            try:
                return self._roundtrip(conn, body)
            except BaseException:
                self._drop()
                raise
        except BaseException:
            self._drop()
            raise

    def _roundtrip(self, conn, body: bytes) -> tuple[int, dict, bytes]:
        """One exchange, bounded as a whole by timeout_s: socket timeouts bound each read only, so a
        watchdog shuts the socket down at the deadline and the blocked read fails at once."""
        expired = threading.Event()

        def cut_off() -> None:
            expired.set()
            sock = conn.sock
            if sock is not None:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        watchdog = threading.Timer(self.cfg.timeout_s, cut_off)
        watchdog.daemon = True
        watchdog.start()
        try:
            conn.request("POST", self.path, body=body, headers=self.headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            if expired.is_set():
                raise TimeoutError(f"request exceeded {self.cfg.timeout_s:g} s") from e
            raise
        finally:
            watchdog.cancel()
        if expired.is_set():         # the deadline passed as the last bytes arrived: still too late
            self._drop()
            raise TimeoutError(f"request exceeded {self.cfg.timeout_s:g} s")
        if resp.getheader("Connection", "").lower() == "close":
            self._drop()
        return resp.status, {k: v for k, v in resp.getheaders()}, data

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _retry_after(value: Optional[str], now: Optional[float] = None) -> Optional[float]:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:               # HTTP dates are GMT; an obsolete form may parse naive
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@register_backend("openai")
def _openai(cfg: RecaptionConfig) -> OpenAIChatBackend:
    return OpenAIChatBackend(cfg.openai, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                             captioner_id=default_captioner_id(cfg))


# --- in-process transformers -------------------------------------------------------------------------
def load_vlm(path: str, device: str, dtype=None, trust_remote_code: bool = False):
    """(processor, model) of a local AutoModelForImageTextToText checkpoint, in eval mode on device;
    the tokenizer pads on the left, as batched generation needs (this backend and captioners.serve)."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    processor.tokenizer.padding_side = "left"
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code)
    return processor, model.to(device).eval()


def vlm_generate(model, inputs, max_new_tokens: int, temperature: float, seed: Optional[int]):
    """Token ids from model.generate: sampled at temperature (greedy at 0), seeded when seed is given."""
    import torch

    kwargs = {"max_new_tokens": max_new_tokens, "do_sample": temperature > 0}
    if temperature > 0:
        kwargs["temperature"] = temperature
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode():
        return model.generate(**inputs, **kwargs)


def generation_messages(n_images: int, prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}] * n_images + [{"type": "text", "text": prompt}]}]


class TransformersBackend:
    """An AutoModelForImageTextToText in this process: batched, left-padded generation."""

    def __init__(self, cfg: TransformersBackendConfig, *, max_new_tokens: int, temperature: float,
                 captioner_id: str) -> None:
        if not cfg.model:
            raise ValueError("recaption.transformers.model is not set")
        self.cfg = cfg
        self.max_new_tokens, self.temperature = max_new_tokens, temperature
        self.captioner_id = captioner_id
        self.model = self.processor = None
        self.stats = {"retries": 0, "empty": 0, "errors": 0, "batches": 0}
        self._lock = threading.Lock()      # one generate() at a time: the pipeline's threads share this backend

    def setup(self) -> None:
        if self.model is not None:
            return
        import torch

        from captioners.clip import resolve_device

        self.device = resolve_device(self.cfg.device)
        dtype = "auto" if self.cfg.dtype == "auto" else getattr(torch, self.cfg.dtype)
        self.processor, self.model = load_vlm(self.cfg.model, self.device, dtype, self.cfg.trust_remote_code)

    def close(self) -> None:
        pass

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        with self._lock:
            return self._caption(requests)

    def _caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        self.setup()
        results: list[CaptionResult] = []
        for start in range(0, len(requests), self.cfg.batch_size):
            chunk = list(requests[start:start + self.cfg.batch_size])
            try:
                texts = self.generate(chunk)
                results.extend(CaptionResult(t, None, 1) if t else CaptionResult(None, "empty generation", 1)
                               for t in texts)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: each request is retried alone
                self.stats["errors"] += 1
                results.extend(CaptionResult(None, f"{type(e).__name__}: {e}"[:300], 1) for _ in chunk)
        for i, (req, res) in enumerate(zip(requests, results)):
            attempt = 0
            while not res.ok and attempt < self.cfg.max_retries:
                attempt += 1
                self.stats["retries"] += 1
                retry = CaptionRequest(req.key, req.prompt_id, req.prompt, req.images, req.seed + attempt, req.fps)
                try:
                    text = self.generate([retry])[0]
                    res = CaptionResult(text, None, res.attempts + 1) if text else \
                        CaptionResult(None, "empty generation", res.attempts + 1)
                except Exception as e:  # noqa: BLE001
                    res = CaptionResult(None, f"{type(e).__name__}: {e}"[:300], res.attempts + 1)
            if not res.ok and res.error == "empty generation":
                self.stats["empty"] += 1
            results[i] = res
        return results

    def generate(self, chunk: Sequence[CaptionRequest]) -> list[str]:
        from PIL import Image

        self.stats["batches"] += 1
        texts = [self.processor.apply_chat_template(generation_messages(len(r.images), r.prompt),
                                                    add_generation_prompt=True, tokenize=False) for r in chunk]
        images = [Image.open(io.BytesIO(b)).convert("RGB") for r in chunk for b in r.images]
        inputs = self.processor(text=texts, images=images or None, padding=True, return_tensors="pt").to(self.device)
        out = vlm_generate(self.model, inputs, self.max_new_tokens, self.temperature, chunk[0].seed)
        new = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(new, skip_special_tokens=True)]


@register_backend("transformers")
def _transformers(cfg: RecaptionConfig) -> TransformersBackend:
    return TransformersBackend(cfg.transformers, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                               captioner_id=default_captioner_id(cfg))


# --- any text generation (the mixture's generator) ---------------------------------------------------
def make_text_backend(backend: str, openai: OpenAIBackendConfig, transformers: TransformersBackendConfig, *,
                      max_new_tokens: int, temperature: float, model_id: Optional[str]) -> Recaptioner:
    """The same clients for other generation jobs (reasoning paths, analyses, image code): a request
    is still a prompt plus pictures, and `caption` returns the generated text. `model_id` is recorded
    in provenance; None: "<backend>:<model>"."""
    model = openai.model if backend == "openai" else transformers.model
    model_id = model_id or f"{backend}:{model}"
    if backend == "openai":
        return OpenAIChatBackend(openai, max_new_tokens=max_new_tokens, temperature=temperature, captioner_id=model_id)
    if backend == "transformers":
        return TransformersBackend(transformers, max_new_tokens=max_new_tokens, temperature=temperature,
                                   captioner_id=model_id)
    raise ValueError(f"no text generation backend {backend!r}; known: openai, transformers")


"""The DashScope native HTTP API, as far as Qwen3-ASR needs it (see shared/DASHSCOPE_API.md).

One :class:`Client` serves every worker thread: one httpx connection pool, one
requests-per-minute limiter and one cap on requests in flight. Errors map to the core's kinds:
network errors, timeouts, 429, ``Throttling*`` and 5xx are transient (``Retry-After``
honoured); a rejected key is fatal (every file would fail the same way); any other 4xx is
permanent for the file. The key is sent in a header only, never put in a message.
"""
from __future__ import annotations

import math
import threading
import time
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from mediaindex.errors import FatalError, PermanentError, TransientError

BASE_URLS = {
    "intl": "https://dashscope-intl.aliyuncs.com/api/v1",
    "cn": "https://dashscope.aliyuncs.com/api/v1",
    "us": "https://dashscope-us.aliyuncs.com/api/v1",
}
FLASH_PATH = "/services/aigc/multimodal-generation/generation"
SUBMIT_PATH = "/services/audio/asr/transcription"
FATAL_CODES = ("InvalidApiKey", "Arrearage", "AccessDenied", "Unauthorized")


class RateLimiter:
    """At most ``rpm`` requests in any 60 s window as the service counts them, across all threads.

    A slot is taken before a request and given back (``done``) when it ended; it stays counted
    until ``window`` s after that. Counting from the end, not the start, keeps a request that
    reached the service late (a slow network, a busy machine) from putting ``rpm + 1`` requests
    into one of the service's windows.
    """

    def __init__(self, rpm: float, window: float = 60.0):
        self.rpm = max(1, int(rpm))
        self.window = window
        self.slots: list[list[float]] = []  # [end time]; inf while the request is in flight
        self.cond = threading.Condition()

    def acquire(self) -> list[float]:
        """Wait for a slot and take it; give it to ``done`` when the request has ended."""
        with self.cond:
            while True:
                now = time.monotonic()
                self.slots = [s for s in self.slots if s[0] + self.window > now]
                if len(self.slots) < self.rpm:
                    slot = [math.inf]
                    self.slots.append(slot)
                    return slot
                first = min(s[0] for s in self.slots) + self.window - now
                self.cond.wait(None if math.isinf(first) else first)  # done() wakes it too

    def done(self, slot: list[float]) -> None:
        """The request of this slot ended: it counts for ``window`` s more."""
        with self.cond:
            slot[0] = time.monotonic()
            self.cond.notify_all()


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class Client:
    """Blocking calls to one region's native API (``base_url`` ends in ``/api/v1``)."""

    def __init__(self, api_key: str | None, base_url: str, *, region: str = "intl", rpm: float = 60,
                 concurrency: int = 4, timeout: float = 120.0, key_setting: str = "DASHSCOPE_API_KEY"):
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.region = region
        self.key_setting = key_setting
        self.limiter = RateLimiter(rpm)
        self.in_flight = threading.BoundedSemaphore(max(1, int(concurrency)))
        self.timeout = httpx.Timeout(timeout, connect=min(30.0, timeout))
        limits = httpx.Limits(max_connections=max(1, int(concurrency)) + 2)
        self.http = httpx.Client(timeout=self.timeout, limits=limits, follow_redirects=False)
        self.requests = 0  # sent so far (the benchmark reads it)

    def close(self) -> None:
        self.http.close()

    # ---- the calls -----------------------------------------------------------------------

    def flash(self, model: str, audio: str, *, context: str = "", language: str | None = None,
              itn: bool = False, what: str = "") -> dict[str, Any]:
        """One synchronous ``qwen3-asr-flash`` call; ``audio`` is a URL or a ``data:`` URL.

        Returns ``{"text", "language", "emotion", "seconds", "raw"}``.
        """
        options: dict[str, Any] = {"enable_itn": bool(itn)}
        if language:
            options["language"] = language
        body = {"model": model,
                "input": {"messages": [{"role": "system", "content": [{"text": context or ""}]},
                                       {"role": "user", "content": [{"audio": audio}]}]},
                "parameters": {"asr_options": options}}
        data = self._call("POST", FLASH_PATH, what, json=body)
        return parse_flash(data)

    def submit(self, model: str, file_url: str, parameters: dict[str, Any], *, what: str = "") -> str:
        """Submit a ``qwen3-asr-flash-filetrans`` task; returns its id. Not idempotent: it pays."""
        body = {"model": model, "input": {"file_url": file_url}, "parameters": parameters}
        data = self._call("POST", SUBMIT_PATH, what, json=body, headers={"X-DashScope-Async": "enable"})
        task_id = (data.get("output") or {}).get("task_id")
        if not task_id:
            raise TransientError(f"{what}: the service accepted the task but sent no task id")
        return str(task_id)

    def task(self, task_id: str, *, what: str = "") -> dict[str, Any]:
        """The task's state: the whole response (``output.task_status``, ``usage``...)."""
        return self._call("GET", f"/tasks/{task_id}", what)

    def fetch_result(self, url: str, *, what: str = "") -> dict[str, Any]:
        """The result file at a presigned URL: fetched WITHOUT the Authorization header."""
        return self._send("GET", url, what, auth=False, result=True)

    # ---- plumbing ------------------------------------------------------------------------

    def _call(self, method: str, path: str, what: str, **kw) -> dict[str, Any]:
        if not self.api_key:
            raise FatalError(f"no DashScope API key: set {self.key_setting} (or api_key in the [dashscope] "
                             f"section of config.toml); keys are per region (this is {self.region!r})")
        return self._send(method, self.base_url + path, what, **kw)

    def _send(self, method: str, url: str, what: str, *, auth: bool = True, result: bool = False,
              json: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
        hdrs = {"Accept": "application/json"}
        if auth:
            hdrs["Authorization"] = f"Bearer {self.api_key}"
        hdrs.update(headers or {})
        slot = self.limiter.acquire()
        try:
            with self.in_flight:
                self.requests += 1
                resp = self.http.request(method, url, json=json, headers=hdrs)
        except httpx.TimeoutException as e:
            raise TransientError(f"{what}: DashScope did not answer in time ({type(e).__name__})") from None
        except httpx.HTTPError as e:
            raise TransientError(f"{what}: cannot reach DashScope: {type(e).__name__}: {e}") from None
        finally:
            self.limiter.done(slot)
        if resp.status_code // 100 == 2:
            try:
                data = resp.json()
            except ValueError:
                raise TransientError(f"{what}: DashScope sent a response that is not JSON "
                                     f"(HTTP {resp.status_code})") from None
            if not isinstance(data, dict):
                raise TransientError(f"{what}: DashScope sent an unexpected response")
            return data
        raise self.error(resp, what, result=result)

    def error(self, resp: httpx.Response, what: str, *, result: bool = False) -> Exception:
        """The core error for a failed response (DASHSCOPE_API.md section 6)."""
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        body = body if isinstance(body, dict) else {}
        if isinstance(body.get("error"), dict):  # the OpenAI-compatible envelope
            body = body["error"]
        code = str(body.get("code") or "Unknown")
        text = str(body.get("message") or body.get("msg") or resp.text[:200] or resp.reason_phrase)
        quoted = f"DashScope said HTTP {status} {code}: {text}"
        wait = retry_after(resp.headers.get("Retry-After"))
        if result:  # the presigned result file: an expired link (403/404) means asking again later
            return TransientError(f"{what}: cannot fetch the result file: {quoted}", retry_after=wait)
        if status == 429 or code.startswith("Throttling") or status >= 500 or code.startswith("InternalError"):
            return TransientError(f"{what}: {quoted}", retry_after=wait)
        if status in (401, 403) or code in FATAL_CODES:
            return FatalError(f"DashScope rejected the API key ({quoted}): check {self.key_setting} "
                              f"(or api_key in [dashscope]) and that the key belongs to the {self.region!r} "
                              "region (set region = \"intl\", \"cn\" or \"us\"); an overdue account also stops here")
        return PermanentError(f"{what}: {quoted}")


def parse_flash(data: dict[str, Any]) -> dict[str, Any]:
    """Text, language, emotion and billed seconds from a flash response (tolerant of gaps)."""
    choices = (data.get("output") or {}).get("choices") or [{}]
    message = choices[0].get("message") or {}
    content = message.get("content")
    if isinstance(content, str):
        text = content
    else:
        text = "".join(str(c.get("text") or "") for c in content or [] if isinstance(c, dict))
    language = emotion = None
    for note in message.get("annotations") or []:
        if isinstance(note, dict) and note.get("type") == "audio_info":
            language = note.get("language") or None
            emotion = str(note["emotion"]).lower() if note.get("emotion") else None
    seconds = (data.get("usage") or {}).get("seconds")
    return {"text": text.strip(), "language": language, "emotion": emotion,
            "seconds": float(seconds) if seconds is not None else None, "raw": data}

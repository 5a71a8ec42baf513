"""A loopback stand-in for DashScope's native API (shared/DASHSCOPE_API.md), for tests.

It speaks the documented wire format over real sockets: flash (plain JSON), filetrans submit,
the task lifecycle PENDING -> RUNNING -> SUCCEEDED (or FAILED / UNKNOWN), the result file at a
presigned-style URL that rejects an Authorization header, and the error envelope. It also
serves published files under ``/files/`` (the staging a test's publish callback uses).

It "recognises" speech by finding which corpus file, and where in it, the audio it received
comes from (cross-correlating 20 ms loudness envelopes) and answering with the manifest's
sentences there: chunk offsets that are wrong give wrong text.
"""
from __future__ import annotations

import base64
import collections
import json
import math
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

FPS = 50  # envelope frames per second


def envelope(path: Path, channel: int | None = None) -> np.ndarray:
    """Log loudness per 20 ms of the audio (mono 16 kHz: the mix, or one channel)."""
    mix = ["-ac", "1"] if channel is None else ["-af", f"pan=mono|c0=c{channel}"]
    pcm = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", f"file:{path}", "-map", "0:a:0", *mix,
                          "-ar", "16000", "-f", "s16le", "-"], capture_output=True, check=True).stdout
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32)
    n = len(x) // 320
    frames = x[: n * 320].reshape(n, 320)
    return np.log10((frames ** 2).mean(axis=1) + 1.0)


def locate(long: np.ndarray, short: np.ndarray) -> tuple[int, float]:
    """(frame offset, normalised correlation) of ``short`` inside ``long``."""
    n = min(len(short), len(long))
    y = short[:n] - short[:n].mean()
    dy = math.sqrt(float((y ** 2).sum()))
    if n < 10 or dy == 0:
        return 0, 0.0
    size = 1 << (len(long) + n).bit_length()
    corr = np.fft.irfft(np.fft.rfft(long, size) * np.conj(np.fft.rfft(y, size)), size)[: len(long) - n + 1]
    c1 = np.concatenate([[0.0], np.cumsum(long, dtype=np.float64)])
    c2 = np.concatenate([[0.0], np.cumsum(long.astype(np.float64) ** 2)])
    s1, s2 = c1[n:] - c1[:-n], c2[n:] - c2[:-n]
    var = np.maximum(s2 - s1 ** 2 / n, 1e-9)
    score = corr / (np.sqrt(var) * dy)
    best = int(np.argmax(score))
    return best, float(score[best])


class Oracle:
    """Which corpus file and offset a piece of audio comes from; the manifest's words there."""

    def __init__(self, corpus: Path, manifest: dict):
        self.corpus = corpus
        self.files = [f for f in manifest["files"] if f.get("duration") and (corpus / f["path"]).exists()]
        self.envs: dict[str, np.ndarray] = {}
        self.lock = threading.Lock()

    def _env(self, rel: str) -> np.ndarray:
        with self.lock:
            if rel not in self.envs:
                self.envs[rel] = envelope(self.corpus / rel)
            return self.envs[rel]

    def find(self, audio_file: Path, channel: int | None = None) -> tuple[dict | None, float, float]:
        """(manifest entry, offset s, duration s) of the best match (entry None: no match)."""
        env = envelope(audio_file, channel)
        best = (None, 0.0, -1.0)
        for f in self.files:
            off, score = locate(self._env(f["path"]), env)
            if score > best[2]:
                best = (f, off / FPS, score)
        entry, offset, score = best
        return (entry if score > 0.6 else None), offset, len(env) / FPS

    def sentences(self, entry: dict | None, offset: float, length: float) -> list[dict]:
        if entry is None:
            return []
        return [s for s in entry.get("sentences") or [] if offset <= (s["start"] + s["end"]) / 2 < offset + length]


class Double:
    """The server; its counters and switches are what tests read and set."""

    def __init__(self, corpus: Path, manifest: dict, key: str = "sk-test-double-key"):
        self.key = key
        self.oracle = Oracle(corpus, manifest)
        self.files_dir = Path(tempfile.mkdtemp(prefix="dashscope-double-"))
        self.faults: collections.deque = collections.deque()  # (path prefix, status, headers, body)
        self.tasks: dict[str, dict] = {}
        self.submissions = 0
        self.flash_calls = 0
        self.billed = 0.0
        self.hits: list[tuple[float, str, str]] = []  # (time, method, path)
        self.steps_pending = 1  # GETs a task stays PENDING, then RUNNING for steps_running GETs
        self.steps_running = 1
        self.fail_next_task: tuple[str, str] | None = None  # (code, message) for the next task
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.base_url = self.url + "/api/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Double":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        shutil.rmtree(self.files_dir, ignore_errors=True)

    # ---- what tests use ------------------------------------------------------------------

    def publish(self, local: Path) -> str:
        """Serve a file under /files/ (a stand-in for a presigned bucket URL)."""
        name = f"{uuid.uuid4().hex[:12]}{Path(local).suffix}"
        shutil.copyfile(local, self.files_dir / name)
        return f"{self.url}/files/{name}"

    def inject(self, prefix: str, status: int, code: str = "", message: str = "", headers: dict | None = None) -> None:
        """The next request whose path starts with ``prefix`` gets this error instead."""
        body = json.dumps({"code": code, "message": message, "request_id": str(uuid.uuid4())}).encode()
        self.faults.append((prefix, status, headers or {}, body))

    # ---- the server ----------------------------------------------------------------------

    def _handler(self):
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def send(self, status: int, body: dict | bytes, headers: dict | None = None,
                     ctype: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-request-id", str(uuid.uuid4()))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def error(self, status: int, code: str, message: str) -> None:
                self.send(status, {"code": code, "message": message, "request_id": str(uuid.uuid4())})

            def body(self) -> dict | None:
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    return json.loads(self.rfile.read(n) or b"null")
                except ValueError:
                    return None

            def fault(self) -> bool:
                with double.lock:
                    for i, (prefix, status, headers, body) in enumerate(double.faults):
                        if self.path.startswith(prefix):
                            del double.faults[i]
                            self.send(status, body, headers)
                            return True
                return False

            def authed(self) -> bool:
                if self.headers.get("Authorization") != f"Bearer {double.key}":
                    self.error(401, "InvalidApiKey", "Invalid API-key provided.")
                    return False
                return True

            def do_GET(self):
                double.hits.append((time.monotonic(), "GET", self.path))
                if self.path.startswith("/files/"):
                    f = double.files_dir / self.path[len("/files/"):]
                    return self.send(200, f.read_bytes(), ctype="audio/ogg") if f.is_file() else \
                        self.send(404, b"NoSuchKey", ctype="text/plain")
                if self.path.startswith("/results/"):
                    if self.headers.get("Authorization"):  # OSS: one auth mechanism only
                        return self.send(400, b"<Error><Code>InvalidArgument</Code><Message>Unsupported "
                                              b"Authorization Type</Message></Error>", ctype="application/xml")
                    task = double.tasks.get(self.path.split("?")[0][len("/results/"):].removesuffix(".json"))
                    return self.send(200, task["result"]) if task else self.send(404, b"NoSuchKey", ctype="text/plain")
                if self.fault():
                    return
                if self.path.startswith("/api/v1/tasks/"):
                    if not self.authed():
                        return
                    return self.send(200, double._poll(self.path.rsplit("/", 1)[-1]))
                self.error(404, "InvalidURL", "no such path")

            def do_POST(self):
                double.hits.append((time.monotonic(), "POST", self.path))
                body = self.body()
                if self.fault():
                    return
                if not self.authed():
                    return
                if body is None or not isinstance(body, dict) or not body.get("model"):
                    return self.error(400, "InvalidParameter", "Required parameter(s) missing or invalid.")
                if self.path == "/api/v1/services/aigc/multimodal-generation/generation":
                    return double._flash(self, body)
                if self.path == "/api/v1/services/audio/asr/transcription":
                    if self.headers.get("X-DashScope-Async") != "enable":
                        return self.error(400, "InvalidParameter", "current user api does not support synchronous calls")
                    url = (body.get("input") or {}).get("file_url")
                    if not isinstance(url, str) or "parameters" not in body:
                        return self.error(400, "InvalidParameter", "input.file_url and parameters are required")
                    return self.send(200, double._submit(body))
                self.error(404, "InvalidURL", "no such path")

        return Handler

    def _flash(self, handler, body: dict) -> None:
        messages = (body.get("input") or {}).get("messages") or []
        audio = next((c.get("audio") for m in messages if m.get("role") == "user" for c in m.get("content") or []
                      if "audio" in c), None)
        if not isinstance(audio, str) or not audio.startswith("data:"):
            return handler.error(400, "InvalidParameter", "The audio is invalid.")
        raw = base64.b64decode(audio.split(",", 1)[1])
        if len(audio) > 10_000_000:
            return handler.error(400, "InvalidParameter", "The audio file is too large (over 10 MB).")
        with tempfile.NamedTemporaryFile(suffix=".opus") as f:
            f.write(raw)
            f.flush()
            entry, offset, length = self.oracle.find(Path(f.name))
        if length > 300:
            return handler.error(400, "InvalidParameter", "The audio is longer than 5 minutes.")
        sents = self.oracle.sentences(entry, offset, length)
        seconds = math.ceil(length)
        with self.lock:
            self.flash_calls += 1
            self.billed += seconds
        handler.send(200, {"request_id": str(uuid.uuid4()), "output": {"choices": [{"finish_reason": "stop", "message": {
            "role": "assistant", "content": [{"text": " ".join(s["text"] for s in sents)}],
            "annotations": [{"type": "audio_info", "language": (entry or {}).get("language") or "en",
                             "emotion": "neutral"}]}}]},
            "usage": {"input_tokens_details": {"text_tokens": 0}, "output_tokens_details": {"text_tokens": 6},
                      "seconds": seconds}})

    def _submit(self, body: dict) -> dict:
        task_id = str(uuid.uuid4())
        with self.lock:
            self.submissions += 1
            self.tasks[task_id] = {"polls": 0, "status": "PENDING", "body": body, "fail": self.fail_next_task,
                                   "submit_time": time.strftime("%Y-%m-%d %H:%M:%S.000")}
            self.fail_next_task = None
        return {"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "PENDING"}}

    def _poll(self, task_id: str) -> dict:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None:
                return {"request_id": str(uuid.uuid4()), "output": {"task_id": task_id, "task_status": "UNKNOWN"}}
            task["polls"] += 1
            fetch = task["status"] == "PENDING" and task["polls"] > self.steps_pending
            if fetch:
                task["status"] = "RUNNING"
            elif task["status"] == "RUNNING" and task["polls"] > self.steps_pending + self.steps_running:
                task["status"] = "RUN"
        if fetch:
            self._fetch(task)
        if task["status"] == "RUN":
            self._run(task_id, task)
        out = {"task_id": task_id, "task_status": task["status"], "submit_time": task["submit_time"]}
        reply = {"request_id": str(uuid.uuid4()), "output": out}
        if task["status"] == "SUCCEEDED":
            out["result"] = {"transcription_url": f"{self.url}/results/{task_id}.json?Expires=1&Signature=x"}
            out["end_time"] = time.strftime("%Y-%m-%d %H:%M:%S.000")
            reply["usage"] = {"seconds": task["seconds"]}
        elif task["status"] == "FAILED":
            out["code"], out["message"] = task["fail"]
        return reply

    def _fetch(self, task: dict) -> None:
        """The service reads the audio when the task starts running (PENDING -> RUNNING)."""
        try:
            with urllib.request.urlopen(task["body"]["input"]["file_url"], timeout=30) as r, \
                    tempfile.NamedTemporaryFile(suffix=".audio") as f:
                f.write(r.read())
                f.flush()
                channels = task["body"]["parameters"].get("channel_id") or [0]
                task["channels"] = int(json.loads(subprocess.run(
                    ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=channels",
                     "-of", "json", f.name], capture_output=True, check=True).stdout)["streams"][0]["channels"])
                if max(channels) >= task["channels"]:
                    task["fail"] = task["fail"] or ("InvalidParameter", f"channel_id {channels}: the audio has "
                                                    f"{task['channels']} channel(s)")
                    return
                task["found"] = {c: self.oracle.find(Path(f.name), c) for c in channels}
        except Exception:
            task["fail"] = task["fail"] or ("InvalidFile.DownloadFailed", "The audio file cannot be downloaded.")

    def _run(self, task_id: str, task: dict) -> None:
        """Fetch the audio like the service does and write the result file (or fail)."""
        if task["fail"]:
            task["status"] = "FAILED"
            return
        url = task["body"]["input"]["file_url"]
        transcripts = []
        for c, (entry, offset, length) in task["found"].items():  # each channel: recognised and billed
            sentences = []
            for i, s in enumerate(self.oracle.sentences(entry, offset, length)):
                toks = s["text"].split()
                b, e = round((s["start"] - offset) * 1000), round((s["end"] - offset) * 1000)
                step = (e - b) / max(1, len(toks))
                words = [{"begin_time": round(b + k * step), "end_time": round(b + (k + 1) * step),
                          "text": t.rstrip(".,!?"), "punctuation": t[len(t.rstrip(".,!?")):]} for k, t in enumerate(toks)]
                sentences.append({"sentence_id": i, "begin_time": b, "end_time": e, "text": s["text"],
                                  "language": entry.get("language") or "en", "emotion": "neutral", "words": words})
            transcripts.append({"channel_id": c, "text": " ".join(s["text"] for s in sentences), "sentences": sentences})
        length = max(found[2] for found in task["found"].values())
        task["seconds"] = math.ceil(length) * len(task["found"])
        with self.lock:
            self.billed += task["seconds"]
        task["result"] = {"file_url": url, "audio_info": {"format": "opus", "sample_rate": 16000},
                          "transcripts": transcripts}
        task["status"] = "SUCCEEDED"


# ---- staging storage: a bucket whose presigned URLs the double serves ------------------------


def staging_plugin(files_dir: Path, url: str):
    """A plugin module (for ``pm.register``) with a ``double`` storage: ``stage`` copies into the
    double's /files/, ``public_url`` gives its URL, ``unstage`` deletes it."""
    import types
    from typing import Iterator

    from mediaindex.backends import ObjectInfo, StorageBackend
    from mediaindex.hookspecs import hookimpl

    class DoubleStorage(StorageBackend):
        scheme = "double"

        def _file(self, key: str) -> Path:
            return Path(files_dir) / key.replace("/", "_")

        def open(self, uri: str):
            return self._file(uri.removeprefix("double://")).open("rb")

        def list(self, prefix: str, problems=None) -> Iterator[ObjectInfo]:
            return iter(())

        def stat(self, uri: str):
            f = self._file(uri.removeprefix("double://"))
            return ObjectInfo(uri, f.stat().st_size, f.stat().st_mtime) if f.exists() else None

        def stage(self, local_path: Path, key: str) -> str:
            shutil.copyfile(local_path, self._file(key))
            return f"double://{key}"

        def unstage(self, key: str) -> None:
            self._file(key).unlink(missing_ok=True)

        def public_url(self, uri: str, expires: int = 3600):
            return f"{url}/files/{uri.removeprefix('double://').replace('/', '_')}" if uri.startswith("double://") else None

    module = types.ModuleType("dashscope_double_staging")

    @hookimpl
    def register_storage_backends(register, config):
        register(DoubleStorage())

    module.register_storage_backends = register_storage_backends
    return module

"""Index backend ``meilisearch``: segment documents in a Meilisearch server (shared, typo-tolerant).

One Meilisearch index (``[meilisearch] index``, default ``mediaindex``) holds one document per
segment (``type = "segment"``) plus one per media (``type = "media"``, so a media without speech
is still "in the index"). Every write is sent in bounded batches and waited for: ``upsert``
returns only when Meilisearch has applied it, and a failed task is raised, never dropped.

- ``upsert`` writes the media's documents under a new generation token, then deletes the media's
  documents of other generations by filter: readers never see the media half gone.
- Settings (searchable, filterable, sortable attributes, ranking rules, localized attributes for
  Chinese/Japanese, typo tolerance, facet limits) are compared with the server's at first use and
  applied when they differ; a settings task that fails is a FatalError.
- Meilisearch unreachable, timing out or answering 5xx/429: TransientError (the job queue
  retries, the web API answers 503). A rejected key: FatalError.
- Search: the query is parsed by the core (:func:`mediaindex.forgive.query.parse_search`) and sent
  as plain words and quoted phrases, never as the user's own syntax. The server forgives typos and
  split/joined words (``forgives``); numbers, spellings and sound-alike names come from the core
  as ``OR`` alternatives (:mod:`mediaindex.forgive.layer`), one search per combination. Every word
  must match (``matchingStrategy: all``); when nothing does, words are dropped (``frequency``, then
  ``last``) and the result is ``partial``. The jump time comes from ``_matchesPosition``, whose
  ``start`` and ``length`` count UTF-8 bytes: they are turned into character offsets before the
  word lookup.
"""
from __future__ import annotations

import os
import re
import threading
import uuid
from typing import Any, Callable

from mediaindex.backends import FacetCounts, FatalError, IndexBackend, PermanentError, TransientError
from mediaindex.hookspecs import hookimpl
from mediaindex.models import Media, SearchHit, SearchQuery, SearchResult, Segment
from mediaindex.forgive.query import AnyOf, parse_search
from mediaindex.textsearch import find_matches, matched_term_count, snippet, time_at, word_spans

DEFAULT_URL = "http://127.0.0.1:7700"
DEFAULT_UID = "mediaindex"
BATCH_DOCS = 1000  # documents per request
BATCH_BYTES = 8 << 20  # and at most about this many bytes of JSON
TASK_TIMEOUT = 120.0  # seconds a write waits for its task before the job is retried
FACETS = ["language", "emotion", "kind", "folder", "month"]
CJK_FIELDS = {"zh": "text_zh", "ja": "text_ja"}  # text of these languages, tokenised by locale
TEXT_FIELDS = ["text", *CJK_FIELDS.values()]
RETRIEVE = ["media_id", "seg", "path", "title", "language", "emotion", "kind", "start", "end",
            *TEXT_FIELDS, "wspans", "wtimes"]

SETTINGS: dict[str, Any] = {
    "searchableAttributes": [*TEXT_FIELDS, "title", "tags"],
    # (attribute sets: compared in any order, see _same)
    "filterableAttributes": sorted(["type", "library", "media_id", "gen", "language", "emotion", "kind",
                                    "folder", "folders", "path", "source", "dates", "month"]),
    "sortableAttributes": ["mtime", "start"],
    "rankingRules": ["words", "typo", "proximity", "attribute", "sort", "exactness"],
    "localizedAttributes": [{"attributePatterns": ["text_zh"], "locales": ["cmn"]},
                            {"attributePatterns": ["text_ja"], "locales": ["jpn"]}],
    "typoTolerance": {"enabled": True, "minWordSizeForTypos": {"oneTypo": 5, "twoTypos": 9}},
    "faceting": {"maxValuesPerFacet": 1000},
    "pagination": {"maxTotalHits": 10000},
}
MAX_VARIANTS = 8  # a query with OR groups is searched once per combination, at most this many
TRANSIENT_TASK_CODES = {"internal", "io_error", "too_many_open_files", "database_size_limit_reached"}


class MeiliUnavailable(TransientError):
    """Meilisearch is down, timing out or overloaded: the server, not the file. The job queue keeps
    such jobs waiting (``outage``: their attempts are not used up) until it is back."""

    outage = True


def quote(value: str) -> str:
    """A value as a Meilisearch filter string literal."""
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def ancestors(path: str) -> list[str]:
    """Every folder above ``path`` ("/a/b/c.mp3" -> ["/a", "/a/b"]): the ``path_prefix`` filter."""
    out, folder = [], os.path.dirname(path)
    while folder and folder not in out:
        out.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return sorted(out, key=len)


def byte_to_char(text: str, offsets: list[int]) -> list[int]:
    """Character offsets of UTF-8 byte offsets into ``text`` (``_matchesPosition`` counts bytes)."""
    raw = text.encode("utf-8")
    return [len(raw[:o].decode("utf-8", "ignore")) for o in offsets]


def _same(key: str, want: Any, got: Any) -> bool:
    """Is the server's setting already what we want? (attribute sets in any order)"""
    if key in ("filterableAttributes", "sortableAttributes") and isinstance(got, list):
        return sorted(map(str, want)) == sorted(map(str, got))
    return _subset(want, got)


def _subset(want: Any, got: Any) -> bool:
    """Does the server's setting ``got`` hold everything in ``want`` (it adds its defaults)?"""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_subset(v, got.get(k)) for k, v in want.items())
    return want == got


class MeiliIndex(IndexBackend):
    """Segment documents in a Meilisearch index. Cheap to construct; connects on first use."""

    name = "meilisearch"
    forgives = frozenset({"typo", "compound"})  # the server's own; the core adds numbers, spellings, sound-alikes

    def __init__(self, url: str, api_key: str | None, uid: str = DEFAULT_UID, *, batch_docs: int = BATCH_DOCS,
                 timeout: float = 10.0, task_timeout: float = TASK_TIMEOUT):
        self.url, self.uid = url.rstrip("/"), uid
        self.batch_docs = max(1, int(batch_docs))
        self.task_timeout = task_timeout
        self._api_key, self._timeout = api_key, timeout
        self._client = None
        self._ready = False
        self._lock = threading.Lock()

    # ---- connection, errors, tasks ---------------------------------------------------------

    @property
    def client(self):
        if self._client is None:
            import meilisearch

            self._client = meilisearch.Client(self.url, self._api_key, timeout=self._timeout)
        return self._client

    def _call(self, fn: Callable, *args, **kw):
        """Run a client call; map its errors to the core's (transient, fatal, permanent)."""
        from meilisearch.errors import (MeilisearchApiError, MeilisearchCommunicationError,
                                        MeilisearchTimeoutError)

        try:
            return fn(*args, **kw)
        except MeilisearchTimeoutError as e:
            raise MeiliUnavailable(f"Meilisearch at {self.url} did not answer in time: {_short(e.message)}") from None
        except MeilisearchCommunicationError as e:
            raise MeiliUnavailable(f"Meilisearch at {self.url} is unreachable: {_why_down(e.message)}") from None
        except MeilisearchApiError as e:
            status, code = e.status_code, e.code or ""
            if status in (401, 403):
                raise FatalError(f"Meilisearch at {self.url} rejected the key ({code}): set MEILI_MASTER_KEY "
                                 "or [meilisearch] api_key") from None
            if status >= 500 or status == 429:
                raise MeiliUnavailable(f"Meilisearch at {self.url} answered {status}: {_short(e.message)}",
                                       retry_after=_retry_after(e)) from None
            raise PermanentError(f"Meilisearch refused a request ({code}): {_short(e.message)}") from None

    def _index(self):
        return self.client.index(self.uid)

    def _wait(self, task_uids: list[int], what: str) -> None:
        """Wait for tasks in order; a failed one raises (transient or permanent by its code)."""
        for uid in task_uids:
            try:
                task = self._call(self.client.wait_for_task, uid, timeout_in_ms=int(self.task_timeout * 1000),
                                  interval_in_ms=25)
            except MeiliUnavailable as e:
                raise MeiliUnavailable(f"{what}: {e}") from None
            if task.status == "succeeded":
                continue
            err = task.error or {}
            code, message = err.get("code") or task.status, _short(err.get("message") or "")
            text = f"{what}: Meilisearch task {uid} {task.status} ({code}): {message}"
            if code == "no_space_left_on_device":
                raise FatalError(text)
            if code in TRANSIENT_TASK_CODES or task.status == "canceled":
                raise TransientError(text)
            raise PermanentError(text)

    def _ensure(self) -> None:
        """Create the index and apply the settings once per process (idempotent)."""
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            try:
                self._call(self._raw_get_index)
            except PermanentError:
                task = self._call(self.client.create_index, self.uid, {"primaryKey": "id"})
                try:
                    self._wait([task.task_uid], f"creating the Meilisearch index {self.uid!r}")
                except PermanentError as e:
                    if "index_already_exists" not in str(e):
                        raise FatalError(str(e)) from None
            current = self._call(self._index().get_settings)
            todo = {k: v for k, v in SETTINGS.items() if not _same(k, v, current.get(k))}
            if todo:
                task = self._call(self._index().update_settings, todo)
                try:
                    self._wait([task.task_uid], f"applying the settings of Meilisearch index {self.uid!r}")
                except PermanentError as e:
                    raise FatalError(str(e)) from None
            self._ready = True

    def _raw_get_index(self):
        return self.client.http.get(f"indexes/{self.uid}")

    # ---- writes ----------------------------------------------------------------------------

    def _batches(self, docs: list[dict]) -> list[list[dict]]:
        """Docs cut into requests of at most ``batch_docs`` documents and about BATCH_BYTES."""
        out, cur, size = [], [], 0
        for d in docs:
            n = _approx_size(d)
            if cur and (len(cur) >= self.batch_docs or size + n > BATCH_BYTES):
                out.append(cur)
                cur, size = [], 0
            cur.append(d)
            size += n
        if cur:
            out.append(cur)
        return out

    def _send(self, method: str, docs: list[dict], what: str) -> None:
        index = self._index()
        send = index.add_documents if method == "add" else index.update_documents
        tasks = []
        for batch in self._batches(docs):
            tasks.append(self._call(send, batch, primary_key="id").task_uid)
        self._wait(tasks, what)

    @staticmethod
    def _place(media: Media) -> dict[str, Any]:
        """The media facets copied into each of its documents (refreshed by update_media)."""
        tags = sorted({str(v) for k, v in (media.tags or {}).items() if v and k in ("title", "artist", "album")})
        month = media.month  # the date facets: "2024-03"; "dates" (its year and month) is the filter
        return {"path": media.path, "folder": media.folder, "folders": ancestors(media.path),
                "title": media.title, "tags": tags, "mtime": media.mtime, "month": month,
                "dates": sorted({month[:4], month}) if month else []}

    def _key(self, media_id: str) -> str:
        """The document id prefix of a media: the library's own copy when the index is shared."""
        return f"{self.library}-{media_id}" if self.library else media_id

    def _scope(self, media_id: str) -> str:
        """The filter for one media's documents in this library."""
        own = f" AND library = {quote(self.library)}" if self.library else ""
        return f"media_id = {quote(media_id)}{own}"

    def documents(self, media: Media, segments: list[Segment], gen: str) -> list[dict[str, Any]]:
        """The documents of one media: one per segment and one for the media."""
        place = self._place(media)
        key = self._key(media.id)
        docs = [{"id": f"{key}-m", "type": "media", "library": self.library, "media_id": media.id, "gen": gen,
                 "language": media.language, "duration": media.duration, **place}]
        for s in segments:
            spans, times = word_spans(s.text, s.words)
            lang = (s.language or media.language or "").split("-")[0].lower()
            docs.append({"id": f"{key}-{s.index}", "type": "segment", "library": self.library,
                         "media_id": media.id, "gen": gen,
                         "seg": s.index, CJK_FIELDS.get(lang, "text"): s.text, "start": s.start, "end": s.end,
                         "language": s.language, "emotion": s.emotion, "kind": s.kind or "speech",
                         "source": s.source, "duration": media.duration, "wspans": spans, "wtimes": times,
                         **place})
        return docs

    def upsert(self, media: Media, segments: list[Segment]) -> None:
        self._ensure()
        gen = uuid.uuid4().hex[:12]
        self._send("add", self.documents(media, segments, gen), f"indexing {media.path}")
        task = self._call(self._index().delete_documents,
                          filter=f"{self._scope(media.id)} AND gen != {quote(gen)}")
        self._wait([task.task_uid], f"removing the old documents of {media.path}")

    def _doc_ids(self, media_id: str) -> list[str]:
        ids: list[str] = []
        for doc in self._browse(self._scope(media_id), ["id"]):
            ids.append(doc["id"])
        return ids

    def _browse(self, filter_: str, fields: list[str], page: int = 1000):
        offset = 0
        while True:
            res = self._call(self._index().get_documents, {"filter": filter_, "fields": fields,
                                                           "limit": page, "offset": offset})
            for d in res.results:
                yield dict(d) if not isinstance(d, dict) else d
            offset += len(res.results)
            if not res.results or offset >= res.total:
                return

    def update_media(self, media: Media) -> None:
        self._ensure()
        place = self._place(media)
        docs = [{"id": i, **place} for i in self._doc_ids(media.id)]
        if docs:
            self._send("update", docs, f"updating {media.path}")

    def delete(self, media_id: str) -> None:
        self._ensure()
        task = self._call(self._index().delete_documents, filter=self._scope(media_id))
        self._wait([task.task_uid], f"removing media {media_id}")

    def media_ids(self) -> set[str]:
        self._ensure()
        own = f" AND library = {quote(self.library)}" if self.library else ""
        return {d["media_id"] for d in self._browse(f'type = "media"{own}', ["media_id"])}

    # ---- search ----------------------------------------------------------------------------

    @staticmethod
    def _filter(q: SearchQuery) -> str:
        parts = ['type = "segment"']
        for attr, value in (("language", q.language), ("emotion", q.emotion), ("kind", q.kind),
                            ("media_id", q.media_id), ("library", getattr(q, "library", None)),
                            ("dates", getattr(q, "date", None))):
            if value:
                parts.append(f"{attr} = {quote(value)}")
        if q.path_prefix:
            prefix = q.path_prefix
            if prefix.endswith("/"):
                parts.append(f"folders = {quote(prefix.rstrip('/') or '/')}")
            else:  # a file, or a folder named without its slash
                parts.append(f"(path = {quote(prefix)} OR folders = {quote(prefix)})")
        return " AND ".join(parts)

    @staticmethod
    def query_text(terms, excluded=()) -> str:
        """The parsed terms as Meilisearch query text: words, quoted phrases and ``-`` before the
        excluded ones (Meilisearch's negative operator), nothing else."""
        def text(t) -> str:
            if t.cjk:
                return t.raw
            if t.phrase and len(t.tokens) > 1:
                return '"' + " ".join(t.tokens) + '"'
            return t.tokens[0]

        words = ["-" + text(t) for t in excluded] + [text(t) for t in terms]  # the last word stays last
        q = " ".join(words)
        return q if terms and terms[-1].prefix else q + " "

    @staticmethod
    def variants(terms) -> list[list]:
        """The plain-term queries an OR query stands for (Meilisearch has no OR)."""
        combos: list[list] = [[]]
        for t in terms:
            alts = [a.term for a in t.alts] if isinstance(t, AnyOf) else [t]
            combos = [c + [a] for c in combos for a in alts][:MAX_VARIANTS]
        return combos

    def _search(self, body: dict[str, Any]) -> dict[str, Any]:
        self._ensure()
        q = body.pop("q")
        return self._call(self._index().search, q, body)

    def _ranked(self, terms, excluded, base: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The answer for every word; else, when several words, the closest (partial) one."""
        body = {"q": self.query_text(terms, excluded), **base}
        res = self._search({**body, "matchingStrategy": "all"})
        if res.get("estimatedTotalHits", 0) or len(terms) < 2:
            return res, False
        for strategy in ("frequency", "last"):
            res = self._search({**body, "matchingStrategy": strategy})
            if res.get("estimatedTotalHits", 0):
                return res, True
        return res, False

    def search(self, query: SearchQuery) -> SearchResult:
        terms, excluded = parse_search(query.q)
        limit, offset = max(0, int(query.limit or 0)), max(0, int(query.offset or 0))
        if not terms:
            return SearchResult(query=query.q, total=0, hits=[], facets=self.facets(query) if query.facets else None)
        variants = self.variants(terms)
        body = {"filter": self._filter(query), "offset": offset, "limit": limit, "showMatchesPosition": True,
                "attributesToRetrieve": RETRIEVE, "showRankingScore": True}
        if query.facets:
            body["facets"] = FACETS  # counted in the same request
        if query.one_per_media:
            body["distinct"] = "media_id"  # Meilisearch's distinct at search time
        if len(variants) == 1:
            res, partial = self._ranked(terms, excluded, body)
            total = int(res.get("estimatedTotalHits", 0))
            hits = [self._hit(h, terms, partial) for h in res.get("hits", [])]
            return SearchResult(query=query.q, total=total, hits=hits, partial=partial, total_exact=total < 1000,
                                facets=self._facet_counts(res) if query.facets else None)
        # OR: one search per combination, merged by ranking score (totals and facets: lower bounds)
        answers = [(v, *self._ranked(v, excluded, {**body, "offset": 0, "limit": offset + limit})) for v in variants]
        found = [a for a in answers if a[1].get("estimatedTotalHits")]
        partial = bool(found) and all(a[2] for a in found)
        pool, seen = [], set()
        for v, res, part in (a for a in found if a[2] == partial):
            for h in res.get("hits", []):
                key = h["media_id"] if query.one_per_media else (h["media_id"], h.get("seg"))
                pool.append((-(h.get("_rankingScore") or 0.0), len(pool), key, h, v))
        pool.sort(key=lambda r: r[:2])
        hits = []
        for _, _, key, h, v in pool:
            if key not in seen:
                seen.add(key)
                hits.append(self._hit(h, v, partial))
        total = max([len(hits)] + [int(a[1].get("estimatedTotalHits", 0)) for a in found if a[2] == partial])
        return SearchResult(query=query.q, total=total, hits=hits[offset:offset + limit], partial=partial,
                            total_exact=False, facets=self._merged_facets([a[1] for a in found if a[2] == partial])
                            if query.facets else None)

    def _hit(self, doc: dict[str, Any], terms, partial: bool) -> SearchHit:
        field = next((f for f in TEXT_FIELDS if doc.get(f) is not None), "text")
        text = doc.get(field) or ""
        positions = (doc.get("_matchesPosition") or {}).get(field) or []
        starts = byte_to_char(text, [p["start"] for p in positions])
        ends = byte_to_char(text, [p["start"] + p["length"] for p in positions])
        matches = sorted((s, e, 0) for s, e in zip(starts, ends) if e > s)
        start = float(doc.get("start") or 0.0)
        t = time_at(matches[0][0], doc.get("wspans") or [], doc.get("wtimes") or [], start) if matches else start
        matched = len(terms)
        if partial:
            matched = max(1, matched_term_count(find_matches(text, terms)))
        return SearchHit(media_id=doc["media_id"], path=doc.get("path") or "", time=t, start=start,
                         end=float(doc.get("end") or start), text=text, snippet=snippet(text, matches),
                         segment_index=int(doc.get("seg") or 0), language=doc.get("language"),
                         emotion=doc.get("emotion"), kind=doc.get("kind") or "speech", title=doc.get("title"),
                         score=float(doc.get("_rankingScore") or 0.0), matched_words=matched)

    def facets(self, query: SearchQuery) -> FacetCounts:
        terms, excluded = parse_search(query.q)
        base = {"filter": self._filter(query), "limit": 0, "facets": FACETS}
        if not terms:
            return self._facet_counts(self._search({"q": "", **base}))
        answers = [self._ranked(v, excluded, base) for v in self.variants(terms)]
        found = [a for a in answers if a[0].get("estimatedTotalHits")]
        partial = bool(found) and all(p for _, p in found)
        return self._merged_facets([res for res, p in found if p == partial])

    def _merged_facets(self, answers: list[dict[str, Any]]) -> FacetCounts:
        """Facets of several answers (OR): the largest count of each value (a lower bound)."""
        out = FacetCounts()
        for res in answers:
            for f, counts in self._facet_counts(res).items():
                mine = out.setdefault(f, {})
                for k, v in counts.items():
                    mine[k] = max(mine.get(k, 0), v)
        return out

    @staticmethod
    def _facet_counts(res: dict[str, Any]) -> FacetCounts:
        dist = res.get("facetDistribution") or {}
        out = FacetCounts({f: {k: int(v) for k, v in (dist.get(f) or {}).items()} for f in FACETS})
        if not out.get("month"):
            out.pop("month", None)  # as the sqlite index: no dates, no date facet
        return out

    def health(self) -> str:
        """The server's health status ("available"), or raises TransientError."""
        return self._call(self.client.health)["status"]


def _short(text: str | None, n: int = 300) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[:n] + "..."


def _why_down(message: str) -> str:
    """The reason in a connection error ("Connection refused"), not urllib3's whole story."""
    m = re.search(r"\[Errno -?\d+\] ([^'\")]+)", message or "")
    if m:
        return m.group(1).strip()
    if "RemoteDisconnected" in (message or "") or "Connection aborted" in (message or ""):
        return "the connection was closed without an answer"
    return _short(message)


def _retry_after(e) -> float | None:
    """Seconds from the answer's Retry-After header, when it has one."""
    try:
        return float(e.response.headers["Retry-After"])  # not every client version keeps the response
    except Exception:  # noqa: BLE001
        return None


def _approx_size(doc: dict[str, Any]) -> int:
    return 64 + sum(len(str(v)) + len(k) + 4 for k, v in doc.items())


def from_config(config) -> MeiliIndex:
    """The backend for a Config: ``MEILI_URL``/``MEILI_MASTER_KEY`` win over ``[meilisearch]``."""
    sec = config.section("meilisearch")
    url = os.environ.get("MEILI_URL") or sec.get("url") or DEFAULT_URL
    key = config.secret("meilisearch", "api_key", env="MEILI_MASTER_KEY")
    return MeiliIndex(url, key, sec.get("index") or DEFAULT_UID, batch_docs=sec.get("batch_size") or BATCH_DOCS,
                      timeout=float(sec.get("timeout") or 10.0))


@hookimpl
def register_index_backends(register, config) -> None:
    register(from_config(config))

"""A loopback HTTP double of the Meilisearch endpoints the ``meilisearch`` index backend uses.

It follows Meilisearch's published behaviour (documents, asynchronous tasks, settings, filters,
facets, ``_matchesPosition`` in UTF-8 bytes, typo tolerance: 1 typo from 5 letters, 2 from 9, a
typo on the first letter counts as two, the last query word is a prefix unless the query ends
with a space, 2-3 query words also match joined, a word also matches split in two), and every
request it gets and every answer it gives is validated against the corrected OpenAPI
description (meili_spec.py): ``violations`` lists what failed, and an invalid request is
answered 400 like the real server would.

Faults for tests: ``fail_requests(n, status)`` (``status=0`` drops the connection),
``fail_tasks(n, code)``, ``stop()``/``start()`` (connection refused in between).
"""
from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime, timezone
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from mediaindex.textsearch import _TOKEN_RE, cut, fold

import meili_spec

DEFAULT_SETTINGS = {
    "displayedAttributes": ["*"], "searchableAttributes": ["*"], "filterableAttributes": [],
    "sortableAttributes": [], "rankingRules": ["words", "typo", "proximity", "attribute", "sort", "exactness"],
    "stopWords": [], "nonSeparatorTokens": [], "separatorTokens": [], "dictionary": [], "synonyms": {},
    "distinctAttribute": None, "proximityPrecision": "byWord",
    "typoTolerance": {"enabled": True, "minWordSizeForTypos": {"oneTypo": 5, "twoTypos": 9},
                      "disableOnWords": [], "disableOnAttributes": [], "disableOnNumbers": False},
    "faceting": {"maxValuesPerFacet": 100, "sortFacetValuesBy": {"*": "alpha"}},
    "pagination": {"maxTotalHits": 1000}, "embedders": {}, "searchCutoffMs": None,
    "localizedAttributes": None, "facetSearch": True, "prefixSearch": "indexingTime",
}
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,511}$")


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, type_: str = "invalid_request"):
        super().__init__(message)
        self.status, self.code, self.message, self.type = status, code, message, type_

    def body(self) -> dict:
        return {"message": self.message, "code": self.code, "type": self.type,
                "link": f"https://docs.meilisearch.com/errors#{self.code}"}


# ---- text ------------------------------------------------------------------------------------


@lru_cache(maxsize=200_000)
def tokens(text: str) -> list[tuple[str, int, int]]:
    """(folded token, byte start, byte length) of a text, like charabia: Latin words folded,
    Chinese/Japanese runs cut into words (jieba)."""
    out = []
    for m in _TOKEN_RE.finditer(text):
        if m.lastgroup == "cjk":
            pos = m.start()
            for w in cut(m.group()):
                i = text.find(w, pos)
                out.append((w, len(text[:i].encode()), len(w.encode())))
                pos = i + len(w)
        else:
            out.append((fold(m.group()), len(text[:m.start()].encode()), len(m.group().encode())))
    return out


def distance(a: str, b: str) -> int:
    """Damerau-Levenshtein (adjacent transpositions count one)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[len(a)][len(b)]


def parse_q(q: str) -> tuple[list[dict], list[dict]]:
    """(terms, negated terms): {"words": [...], "phrase": bool, "prefix": bool}. A ``-`` before a
    word or a quoted phrase negates it (Meilisearch's negative operator, since v1.8)."""
    terms, negated = [], []
    for m in re.finditer(r'(-?)"([^"]*)"?|(-?)(\S+)', q or ""):
        if m.group(2) is not None:
            words = [t for t, _, _ in tokens(m.group(2))]
            if words:
                (negated if m.group(1) else terms).append({"words": words, "phrase": True, "prefix": False})
        else:
            for t, _, _ in tokens(m.group(4)):
                (negated if m.group(3) else terms).append({"words": [t], "phrase": False, "prefix": False})
    if terms and not terms[-1]["phrase"] and q and not q[-1].isspace() and not q.rstrip().endswith('"'):
        terms[-1]["prefix"] = True
    return terms, negated


# ---- filters ---------------------------------------------------------------------------------

_FTOK = re.compile(r'\s*(?:(?P<s>"(?:[^"\\]|\\.)*")|(?P<op>!=|>=|<=|=|>|<|\(|\)|\[|\]|,)|(?P<w>[^\s=!<>()\[\],"]+))')


def parse_filter(text: str, filterable: set[str], code: str):
    """A filter expression as a predicate over documents (=, !=, IN, AND, OR, NOT, parentheses)."""
    toks = []
    pos = 0
    while pos < len(text):
        m = _FTOK.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise ApiError(400, code, f"Was expecting a value but found `{text[pos:]}`.")
            break
        pos = m.end()
        if m.group("s"):
            toks.append(("s", re.sub(r"\\(.)", r"\1", m.group("s")[1:-1])))
        elif m.group("op"):
            toks.append(("op", m.group("op")))
        else:
            toks.append(("w", m.group("w")))
    i = 0

    def peek():
        return toks[i] if i < len(toks) else (None, None)

    def take():
        nonlocal i
        i += 1
        return toks[i - 1]

    def value():
        kind, v = take() if i < len(toks) else (None, None)
        if kind not in ("s", "w"):
            raise ApiError(400, code, "Was expecting a value.")
        return v

    def cond():
        kind, v = peek()
        if kind == "w" and v.upper() == "NOT":
            take()
            inner = cond()
            return lambda d: not inner(d)
        if kind == "op" and v == "(":
            take()
            e = expr()
            if peek() != ("op", ")"):
                raise ApiError(400, code, "Expression `(` is missing a closing `)`.")
            take()
            return e
        attr = value()
        if attr not in filterable:
            raise ApiError(400, code, f"Attribute `{attr}` is not filterable. Available filterable attribute "
                                      f"patterns are: `{', '.join(sorted(filterable))}`.")
        k, op = take() if i < len(toks) else (None, None)
        if k == "w" and op.upper() == "IN":
            if take() != ("op", "["):
                raise ApiError(400, code, "Expected `[` after `IN` keyword.")
            vals = []
            while peek() != ("op", "]"):
                vals.append(value())
                if peek() == ("op", ","):
                    take()
            take()
            return lambda d: any(_has(d, attr, v) for v in vals)
        if k != "op" or op not in ("=", "!="):
            raise ApiError(400, code, f"Was expecting an operation `=`, `!=`, `IN` after `{attr}`.")
        v = value()
        return (lambda d: _has(d, attr, v)) if op == "=" else (lambda d: not _has(d, attr, v))

    def conj():
        left = cond()
        while peek()[0] == "w" and peek()[1].upper() == "AND":
            take()
            right, prev = cond(), left
            left = (lambda a, b: lambda d: a(d) and b(d))(prev, right)
        return left

    def expr():
        left = conj()
        while peek()[0] == "w" and peek()[1].upper() == "OR":
            take()
            right, prev = conj(), left
            left = (lambda a, b: lambda d: a(d) or b(d))(prev, right)
        return left

    if not toks:
        return lambda d: True
    e = expr()
    if i != len(toks):
        raise ApiError(400, code, f"Found unexpected characters at the end of the filter: `{toks[i][1]}`.")
    return e


def _has(doc: dict, attr: str, value: str) -> bool:
    v = doc.get(attr)
    vals = v if isinstance(v, list) else [v]
    for x in vals:
        if x is None:
            continue
        if isinstance(x, bool):
            x = str(x).lower()
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            try:
                if float(value) == float(x):
                    return True
            except ValueError:
                pass
            continue
        if fold(str(x)) == fold(value):  # filters compare case-insensitively
            return True
    return False


# ---- the index -------------------------------------------------------------------------------


class Index:
    def __init__(self, uid: str, primary_key: str | None):
        self.uid, self.primary_key = uid, primary_key
        self.docs: dict[str, dict] = {}
        self.settings = json.loads(json.dumps(DEFAULT_SETTINGS))
        self.created = self.updated = now()

    def view(self) -> dict:
        return {"uid": self.uid, "createdAt": self.created, "updatedAt": self.updated, "primaryKey": self.primary_key}

    def filterable(self) -> set[str]:
        return {a for a in self.settings["filterableAttributes"] if isinstance(a, str)}

    def searchable(self, doc: dict) -> list[str]:
        s = self.settings["searchableAttributes"]
        return [k for k in doc if k != self.primary_key] if s == ["*"] else s

    # -- matching --

    def _min_size(self) -> tuple[int, int]:
        m = self.settings["typoTolerance"]["minWordSizeForTypos"]
        return m["oneTypo"], m["twoTypos"]

    def _word_match(self, want: str, tok: str, prefix: bool) -> tuple[int, int] | None:
        """(typos, matched byte length or -1 for the whole token) when ``tok`` matches ``want``."""
        if tok == want:
            return 0, -1
        if prefix and tok.startswith(want):
            return 0, len(want.encode())
        if not self.settings["typoTolerance"]["enabled"] or want.isdigit():
            return None
        one, two = self._min_size()
        allowed = 2 if len(want) >= two else 1 if len(want) >= one else 0
        if not allowed:
            return None
        cand = tok[:len(want)] if prefix and len(tok) > len(want) else tok
        if abs(len(cand) - len(want)) > allowed:
            return None
        dist = distance(want, cand) + (1 if want[:1] != cand[:1] else 0)  # first letter: two typos
        if dist <= allowed:
            return dist, (len(cand.encode()) if cand != tok else -1)
        return None

    def match(self, doc: dict, terms: list[dict]):
        """Per term: (typos, attribute rank, positions [(field, word pos)], matches [(field, start, len)])."""
        fields = []
        for rank, attr in enumerate(self.searchable(doc)):
            v = doc.get(attr)
            if v is None:
                continue
            vals = v if isinstance(v, list) else [v]
            for idx, x in enumerate(vals):
                if isinstance(x, (str, int, float)) and not isinstance(x, bool):
                    fields.append((attr, rank, idx if isinstance(v, list) else None, tokens(str(x))))
        out = []
        for term in terms:
            best = None
            for attr, rank, idx, toks in fields:
                words = term["words"]
                for p in range(len(toks) - len(words) + 1):
                    typos, spans = 0, []
                    for k, w in enumerate(words):
                        t, b, ln = toks[p + k]
                        got = (0, -1) if t == w else (None if term["phrase"] else
                                                      self._word_match(w, t, term["prefix"] and k == len(words) - 1))
                        if got is None:
                            break
                        typos += got[0]
                        spans.append((attr, idx, b, ln if got[1] < 0 else got[1]))
                    else:
                        if best is None or (typos, rank) < (best[0], best[1]):
                            best = [typos, rank, [(attr, p)], spans]
                        elif (typos, rank) == (best[0], best[1]):
                            best[2].append((attr, p))
                            best[3].extend(spans)
            out.append(best)
        return out

    # -- concatenated and split queries (docs: learn/advanced/concat) --

    def _splits(self, terms: list[dict]) -> dict[int, list[str]]:
        """The best split of each single query word into two words that follow each other in
        the documents: the cut whose pair is the most frequent ("newspaper" -> "news paper")."""
        out: dict[int, list[str]] = {}
        wanted = [i for i, t in enumerate(terms) if not t["phrase"] and len(t["words"][0]) > 1]
        if not wanted:
            return out
        pairs: dict[tuple[str, str], int] = {}
        for d in self.docs.values():
            for attr in self.searchable(d):
                v = d.get(attr)
                for x in (v if isinstance(v, list) else [v]):
                    if isinstance(x, str):
                        toks = [t for t, _, _ in tokens(x)]
                        for pair in set(zip(toks, toks[1:])):
                            pairs[pair] = pairs.get(pair, 0) + 1
        for i in wanted:
            w = terms[i]["words"][0]
            cuts = [(pairs.get((w[:k], w[k:]), 0), [w[:k], w[k:]]) for k in range(1, len(w))]
            n, best = max(cuts, key=lambda c: c[0])
            if n:
                out[i] = best
        return out

    def _compounds(self, doc: dict, terms: list[dict], m: list, splits: dict[int, list[str]]) -> list:
        """Per-term matches with Meilisearch's concatenations and splits added: 2 or 3 query
        words in a row also match their concatenation ("news paper" -> "newspaper"), a word also
        matches its best split as two adjacent words (which counts as one typo)."""
        for i in range(len(terms)):
            for n in (2, 3):
                group = terms[i:i + n]
                if len(group) < n or any(t["phrase"] for t in group) or all(m[k] for k in range(i, i + n)):
                    continue
                got = self.match(doc, [{"words": ["".join(t["words"][0] for t in group)], "phrase": True,
                                        "prefix": False}])[0]
                if got is not None:
                    for k in range(i, i + n):
                        m[k] = m[k] or got
        for i, words in splits.items():
            if m[i] is None:
                got = self.match(doc, [{"words": words, "phrase": True, "prefix": False}])[0]
                if got is not None:
                    m[i] = [got[0] + 1, *got[1:]]
        return m

    def search(self, body: dict) -> dict:
        started = time.perf_counter()
        q = body.get("q") or ""
        limit, offset = body.get("limit", 20), body.get("offset", 0)
        filt = body.get("filter")
        pred = parse_filter(filt, self.filterable(), "invalid_search_filter") if isinstance(filt, str) else (lambda d: True)
        for f in body.get("facets") or []:
            if f not in self.filterable():
                raise ApiError(400, "invalid_search_facets", f"Invalid facet distribution, attribute `{f}` is not "
                                                             "filterable.")
        distinct = body.get("distinct")
        if distinct and distinct not in self.filterable():
            raise ApiError(400, "invalid_search_distinct", f"Attribute `{distinct}` is not filterable.")
        terms, negated = parse_q(q)
        strategy = body.get("matchingStrategy", "last")
        docs = [d for d in self.docs.values() if pred(d)]
        if negated:  # a negated word or phrase: exactly, no typo, no prefix
            exact = [{**t, "phrase": True} for t in negated]
            docs = [d for d in docs if all(x is None for x in self.match(d, exact))]
        ranked = []
        if not terms:
            ranked = [(0, d, None) for d in docs]
        else:
            splits = self._splits(terms)
            matches = {id(d): self._compounds(d, terms, self.match(d, terms), splits) for d in docs}
            needed = self._needed(terms, docs, matches, strategy)
            for order, d in enumerate(docs):
                m = matches[id(d)]
                have = {i for i, x in enumerate(m) if x is not None}
                bucket = next((b for b, need in enumerate(needed) if need <= have), None)
                if bucket is None:
                    continue
                got = [x for x in m if x is not None]
                typos = sum(x[0] for x in got)
                prox = self._proximity([x for x in m if x is not None])
                attr = min(x[1] for x in got)
                exact = -sum(1 for x in got if x[0] == 0)
                ranked.append(((bucket, typos, prox, attr, exact, order), d, m))
            ranked.sort(key=lambda r: r[0])
        if distinct:
            seen, kept = set(), []
            for r in ranked:
                key = json.dumps(r[1].get(distinct))
                if key not in seen:
                    seen.add(key)
                    kept.append(r)
            ranked = kept
        max_hits = self.settings["pagination"]["maxTotalHits"]
        ranked = ranked[:max_hits]
        hits = []
        for key, d, m in ranked[offset:offset + limit]:
            hit = self._retrieve(d, body.get("attributesToRetrieve"))
            if body.get("showMatchesPosition") and m is not None:
                pos: dict[str, list] = {}
                for x in m:
                    if x is None:
                        continue
                    for attr, idx, b, ln in x[3]:
                        entry = {"start": b, "length": ln}
                        if idx is not None:
                            entry["indices"] = [idx]
                        if entry not in pos.setdefault(attr, []):  # (query words joined into one match it once)
                            pos[attr].append(entry)
                for v in pos.values():
                    v.sort(key=lambda e: (e.get("indices", [0]), e["start"]))
                hit["_matchesPosition"] = pos
            if body.get("showRankingScore"):
                hit["_rankingScore"] = 1.0 / (1 + (sum(key[:3]) if isinstance(key, tuple) else 0))
            hits.append(hit)
        res = {"hits": hits, "query": q, "processingTimeMs": int((time.perf_counter() - started) * 1000),
               "limit": limit, "offset": offset, "estimatedTotalHits": len(ranked)}
        if body.get("facets") is not None:
            maxv = self.settings["faceting"]["maxValuesPerFacet"]
            dist: dict[str, dict[str, int]] = {}
            for f in body["facets"]:
                counts: dict[str, int] = {}
                for _, d, _ in ranked:
                    v = d.get(f)
                    for x in set(map(str, v if isinstance(v, list) else [v])) if v is not None else ():
                        counts[x] = counts.get(x, 0) + 1
                dist[f] = dict(sorted(counts.items())[:maxv])
            res["facetDistribution"] = dist
            res["facetStats"] = {}
        return res

    @staticmethod
    def _proximity(got: list) -> int:
        total = 0
        for a, b in zip(got, got[1:]):
            best = 8
            for fa, pa in a[2]:
                for fb, pb in b[2]:
                    if fa == fb:
                        best = min(best, abs(pb - pa) if pb >= pa else abs(pa - pb) + 1)
            total += best
        return total

    def _needed(self, terms, docs, matches, strategy) -> list[set[int]]:
        """The sets of terms a document must match, bucket by bucket (best first)."""
        n = len(terms)
        every = set(range(n))
        if strategy == "all":
            return [every]
        if strategy == "last":
            return [set(range(n - k)) for k in range(n)]
        freq = [sum(1 for d in docs if matches[id(d)][i] is not None) for i in range(n)]
        order = sorted(range(n), key=lambda i: (-freq[i], -i))  # most frequent removed first
        return [every - set(order[:k]) for k in range(n)]

    def _retrieve(self, doc: dict, attrs) -> dict:
        shown = self.settings["displayedAttributes"]
        keys = [k for k in doc if shown == ["*"] or k in shown]
        if attrs and attrs != ["*"]:
            keys = [k for k in keys if k in attrs]
        return {k: doc[k] for k in keys}


# ---- the server ------------------------------------------------------------------------------


class MeiliDouble:
    """A Meilisearch double on 127.0.0.1 (a free port); ``url`` and ``master_key`` to connect."""

    def __init__(self, master_key: str | None = "double-master-key", validate: bool = True):
        self.master_key = master_key
        self.validate = validate
        self.indexes: dict[str, Index] = {}
        self.tasks: list[dict] = []
        self.violations: list[str] = []
        self.requests: list[tuple[str, str, int]] = []  # (method, path, body bytes)
        self.busy_s = 0.0  # time spent answering (to tell the client's own time from the server's)
        self._faults: list[int] = []
        self._task_faults: list[str] = []
        self._lock = threading.RLock()
        self._server = None
        self.port = 0
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        double = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _serve(self):
                double._handle(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Go down: connections are refused until ``start()``."""
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def fail_requests(self, n: int, status: int = 503, method: str | None = None, path: str = "",
                      skip: int = 0) -> None:
        """After ``skip`` matching requests, the next n requests whose method is ``method`` (any
        when None) and whose path ends with ``path`` fail: answered ``status`` (0: the
        connection is dropped without an answer)."""
        self._faults.append([n, status, method, path, skip])

    def fail_tasks(self, n: int, code: str = "internal", kind: str = "document") -> None:
        """The next n tasks whose type starts with ``kind`` fail with this error code."""
        self._task_faults.extend([(kind, code)] * n)

    def _fault(self, method: str, path: str) -> int | None:
        with self._lock:
            for f in self._faults:
                n, status, m, suffix, skip = f
                if n > 0 and (m is None or m == method) and path.endswith(suffix):
                    if skip:
                        f[4] -= 1
                        return None
                    f[0] -= 1
                    return status
        return None

    # -- plumbing --

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        t0 = time.perf_counter()
        try:
            self._answer(h)
        finally:
            with self._lock:
                self.busy_s += time.perf_counter() - t0

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        method = h.command
        url = urlsplit(h.path)
        headers = {k: v for k, v in h.headers.items()}
        self.requests.append((method, url.path, len(body)))
        status = self._fault(method, url.path)
        if status is not None:
            if status == 0:
                h.close_connection = True
                h.connection.shutdown(2)
                return
            return self._send(h, status, ApiError(status, "internal", "injected fault", "internal").body())
        full = f"http://127.0.0.1{h.path}"
        if self.validate and (why := meili_spec.check_request(method, full, headers, body)):
            self.violations.append(f"request {method} {url.path}: {why}")
            return self._send(h, 400, ApiError(400, "bad_request", why).body(), (method, full, headers, body))
        try:
            self._auth(headers)
            payload = json.loads(body) if body else None
            status, out = self._route(method, url.path, parse_qs(url.query), payload)
        except ApiError as e:
            status, out = e.status, e.body()
        except json.JSONDecodeError as e:
            status, out = 400, ApiError(400, "malformed_payload", f"The json payload provided is malformed. {e}").body()
        except Exception as e:  # noqa: BLE001 - a bug in the double: fail the test, not the socket
            self.violations.append(f"double crashed on {method} {url.path}: {type(e).__name__}: {e}")
            status, out = 500, ApiError(500, "internal", f"{type(e).__name__}: {e}", "internal").body()
        self._send(h, status, out, (method, full, headers, body))

    def _send(self, h, status: int, out, req=None) -> None:
        data = json.dumps(out).encode()
        if req and self.validate and (why := meili_spec.check_response(*req, status, data)):
            self.violations.append(f"response {req[0]} {urlsplit(req[1]).path} {status}: {why}")
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    def _auth(self, headers: dict) -> None:
        if not self.master_key:
            return
        auth = headers.get("Authorization") or headers.get("authorization")
        if not auth:
            raise ApiError(401, "missing_authorization_header", "The Authorization header is missing. It must use "
                                                                "the bearer authorization method.", "auth")
        if auth != f"Bearer {self.master_key}":
            raise ApiError(403, "invalid_api_key", "The provided API key is invalid.", "auth")

    def _index(self, uid: str) -> Index:
        ix = self.indexes.get(uid)
        if ix is None:
            raise ApiError(404, "index_not_found", f"Index `{uid}` not found.")
        return ix

    def _task(self, uid: str | None, kind: str, work) -> tuple[int, dict]:
        """Enqueue a task and run it at once; answer its summary (202)."""
        with self._lock:
            task = {"uid": len(self.tasks), "batchUid": len(self.tasks), "indexUid": uid, "status": "enqueued",
                    "type": kind, "canceledBy": None, "details": {}, "error": None, "duration": None,
                    "enqueuedAt": now(), "startedAt": None, "finishedAt": None}
            self.tasks.append(task)
            summary = {"taskUid": task["uid"], "indexUid": uid, "status": "enqueued", "type": kind,
                       "enqueuedAt": task["enqueuedAt"]}
            task["startedAt"] = now()
            try:
                if self._task_faults and kind.startswith(self._task_faults[0][0]):
                    code = self._task_faults.pop(0)[1]
                    raise ApiError(500, code, f"injected task failure ({code})", "internal")
                task["details"] = work() or {}
                task["status"] = "succeeded"
            except ApiError as e:
                task["status"], task["error"] = "failed", e.body()
            task["finishedAt"], task["duration"] = now(), "PT0.001S"
        return 202, summary

    def _route(self, method: str, path: str, query: dict, body):
        parts = [p for p in path.split("/") if p]
        if parts == ["health"]:
            return 200, {"status": "available"}
        if parts[:1] == ["tasks"] and len(parts) == 2 and method == "GET":
            try:
                return 200, self.tasks[int(parts[1])]
            except (ValueError, IndexError):
                raise ApiError(404, "task_not_found", f"Task `{parts[1]}` not found.") from None
        if parts == ["indexes"] and method == "POST":
            uid = body["uid"]
            if not ID_RE.match(uid):
                raise ApiError(400, "invalid_index_uid", f"`{uid}` is not a valid index uid.")

            def create():
                if uid in self.indexes:
                    raise ApiError(409, "index_already_exists", f"Index `{uid}` already exists.")
                self.indexes[uid] = Index(uid, body.get("primaryKey"))
                return {"primaryKey": body.get("primaryKey")}
            return self._task(uid, "indexCreation", create)
        if parts[:1] != ["indexes"] or len(parts) < 2:
            raise ApiError(404, "bad_request", "not handled by the double")
        uid, rest = parts[1], parts[2:]
        if not rest and method == "GET":
            return 200, self._index(uid).view()
        ix = self._index(uid)
        if rest == ["settings"] and method == "GET":
            return 200, ix.settings
        if rest == ["settings"] and method == "PATCH":
            return self._task(uid, "settingsUpdate", lambda: self._settings(ix, body))
        if rest == ["search"] and method == "POST":
            known = meili_spec.spec()["components"]["schemas"]["SearchQuery"]["properties"]
            for k in body or {}:  # the server denies unknown fields (a snake_case name, a typo)
                if k not in known:
                    raise ApiError(400, "bad_request", f"Unknown field `{k}`: expected one of {', '.join(known)}")
            return 200, ix.search(body or {})
        if rest == ["documents"] and method in ("POST", "PUT"):
            docs = body if isinstance(body, list) else [body]
            pk = (query.get("primaryKey") or [None])[0]
            return self._task(uid, "documentAdditionOrUpdate", lambda: self._add(ix, docs, pk, method == "PUT"))
        if rest == ["documents", "fetch"] and method == "POST":
            body = body or {}
            pred = parse_filter(body.get("filter") or "", ix.filterable(), "invalid_document_filter")
            found = [d for d in ix.docs.values() if pred(d)]
            off, lim = body.get("offset", 0), body.get("limit", 20)
            fields = body.get("fields")
            res = [{k: v for k, v in d.items() if not fields or k in fields} for d in found[off:off + lim]]
            return 200, {"results": res, "offset": off, "limit": lim, "total": len(found)}
        if rest == ["documents", "delete"] and method == "POST":
            filt = body.get("filter")
            parse_filter(filt, set(re.findall(r"[A-Za-z_][\w.]*", filt)), "invalid_document_filter")  # syntax only

            def delete():
                pred = parse_filter(filt, ix.filterable(), "invalid_document_filter")
                gone = [k for k, d in ix.docs.items() if pred(d)]
                for k in gone:
                    del ix.docs[k]
                return {"providedIds": 0, "deletedDocuments": len(gone), "originalFilter": json.dumps(filt)}
            return self._task(uid, "documentDeletion", delete)
        raise ApiError(404, "bad_request", f"{method} {path} is not handled by the double")

    @staticmethod
    def _settings(ix: Index, body: dict) -> dict:
        for k, v in body.items():
            if k not in ix.settings:
                raise ApiError(400, "bad_request", f"Unknown field `{k}`")
            if isinstance(v, dict) and isinstance(ix.settings[k], dict):
                for kk, vv in v.items():
                    if isinstance(vv, dict) and isinstance(ix.settings[k].get(kk), dict):
                        ix.settings[k][kk].update(vv)
                    else:
                        ix.settings[k][kk] = vv
            else:
                ix.settings[k] = v if v is not None else DEFAULT_SETTINGS[k]
        ix.updated = now()
        return body

    @staticmethod
    def _add(ix: Index, docs: list, pk: str | None, merge: bool) -> dict:
        pk = ix.primary_key or pk or next((k for k in (docs[0] if docs else {}) if k.lower().endswith("id")), None)
        if pk is None:
            raise ApiError(400, "index_primary_key_no_candidate_found", "The primary key inference failed.")
        ix.primary_key = pk
        for d in docs:
            if pk not in d:
                raise ApiError(400, "missing_document_id", f"Document doesn't have a `{pk}` attribute: `{json.dumps(d)}`.")
            key = str(d[pk])
            if not ID_RE.match(key):
                raise ApiError(400, "invalid_document_id", f"Document identifier `{key}` is invalid.")
        for d in docs:
            key = str(d[pk])
            ix.docs[key] = {**ix.docs[key], **d} if merge and key in ix.docs else dict(d)
        ix.updated = now()
        return {"receivedDocuments": len(docs), "indexedDocuments": len(docs)}

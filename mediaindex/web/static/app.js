/* mediaindex web UI: plain JavaScript, no build step, talks only to the JSON API.
 *
 * Safety rule: every string from the server (file names, titles, transcript words, errors) goes
 * into the page with textContent. The one exception is a hit's snippet, which the API sends as
 * escaped text with <mark> around matches; even that is parsed inertly (DOMParser) and rebuilt
 * from its text and <mark> elements only.
 */
(function () {
  "use strict";

  const PAGE = 20;
  const DEBOUNCE_MS = 150;
  const FACET_DELAY_MS = 300;
  const LEAD_S = 1; // a hit plays from 1 s before its first matched word (the API's "jump")
  const OFFLINE = "The file is offline (drive not mounted?), changed since it was indexed, or outside the indexed folders. Search and the transcript still work.";

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  };

  const state = {
    q: "",
    filters: { lang: null, kind: null, emotion: null, path: null, source: null, event: null, date: null },
    offset: 0,
    total: 0,
    seq: 0,
    controller: null,
    media: null, // the media JSON shown in the player
    mediaSeq: 0, // bumped by every open/close: a slower, older media answer is dropped
    player: null,
    words: [], // [{start, el}] sorted by start
    current: null,
    status: null,
    userScrolledAt: 0,
    statusTimer: null,
    libSeq: 0,
    lib: { sort: "added", kind: "", page: 0 }, // the library view (shown while the search box is empty)
    group: "media", // results: one per recording with its moments ("media"), or one per moment ("none")
  };
  const LIB_PAGE = 25;
  const FILTER_KEYS = ["lang", "kind", "emotion", "path", "date"]; // the facet filters, in the URL too
  const LIB_SORTS = ["added", "-added", "modified", "title", "duration", "-duration"];

  // ---- API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, params, signal) {
    const url = new URL(path, location.origin);
    if (params) {
      for (const [k, v] of Object.entries(params)) {
        if (v !== null && v !== undefined && v !== "") url.searchParams.set(k, v);
      }
    }
    const res = await fetch(url, { signal, credentials: "same-origin", headers: { Accept: "application/json" } });
    if (res.status === 401) { showLogin(); throw new ApiError(401, "a token is needed"); }
    let body = null;
    try { body = await res.json(); } catch (e) { body = null; }
    if (!res.ok) throw new ApiError(res.status, (body && body.error) || res.statusText);
    return body;
  }

  /* A request that changes something: JSON, same origin (the server refuses anything else). */
  async function post(path, body) {
    const res = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", Accept: "application/json" }, body: JSON.stringify(body || {}),
    });
    if (res.status === 401) { showLogin(); throw new ApiError(401, "a token is needed"); }
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (!res.ok) throw new ApiError(res.status, (data && data.error) || res.statusText);
    return data;
  }

  function queuedNote(r, what) {
    const n = r.queued.length;
    const when = r.worker ? "the running indexer picks it up now" : "it runs with the next mediaindex watch or index";
    return `${what}: ${n} file${n === 1 ? "" : "s"} queued; ${when}.`;
  }

  // ---- formatting --------------------------------------------------------------------------

  function clock(t) {
    t = Math.max(0, Math.floor(t || 0));
    const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), s = t % 60;
    const mm = String(m).padStart(2, "0"), ss = String(s).padStart(2, "0");
    return h ? `${h}:${mm}:${ss}` : `${m}:${ss}`;
  }

  function folderLabel(folder) {
    const roots = (state.status && state.status.roots) || [];
    for (const r of roots) {
      const root = r.path.replace(/\/+$/, "");
      if (folder === root) return root.split("/").pop() || root;
      if (folder.startsWith(root + "/")) return (root.split("/").pop() || "") + "/" + folder.slice(root.length + 1);
    }
    return folder.split("/").slice(-2).join("/") || folder;
  }

  const CJK = /[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]/;

  /* The snippet: escaped text with <mark>…</mark>. Parsed inertly; only text and marks survive. */
  function appendSnippet(target, snippet) {
    const doc = new DOMParser().parseFromString("<!doctype html><body>" + (snippet || ""), "text/html");
    for (const node of Array.from(doc.body.childNodes)) {
      if (node.nodeType === Node.ELEMENT_NODE && node.nodeName === "MARK") {
        target.append(el("mark", null, node.textContent));
      } else {
        target.append(document.createTextNode(node.textContent || ""));
      }
    }
  }

  // ---- routing -----------------------------------------------------------------------------

  function parseRoute() {
    const params = new URLSearchParams(location.search);
    const m = location.pathname.match(/^\/m\/([^/]{1,200})\/?$/);
    let t = parseFloat(params.get("t") || "0");
    if (!Number.isFinite(t) || t < 0) t = 0;
    const sort = params.get("sort");
    const page = parseInt(params.get("page") || "1", 10);
    const lib = { sort: LIB_SORTS.includes(sort) ? sort : "added",
                  kind: ["audio", "video"].includes(params.get("show")) ? params.get("show") : "",
                  page: Number.isFinite(page) && page > 1 ? page - 1 : 0 };
    const filters = {};
    for (const k of FILTER_KEYS) filters[k] = params.get(k) || null;
    const group = params.get("group") === "none" ? "none" : "media";
    return { mediaId: m ? m[1] : null, t, q: params.get("q") || "", lib, filters, group };
  }

  function urlFor(mediaId, t, q) {
    const params = new URLSearchParams();
    if (mediaId) params.set("t", (Math.round(t * 10) / 10).toString());
    if (q) params.set("q", q);
    if (q && state.group === "none") params.set("group", "none");
    if (!mediaId) for (const k of FILTER_KEYS) if (state.filters[k]) params.set(k, state.filters[k]);
    if (!q && !mediaId) { // the library view's state: a link to it shows the same page
      if (state.lib.sort !== "added") params.set("sort", state.lib.sort);
      if (state.lib.kind) params.set("show", state.lib.kind);
      if (state.lib.page) params.set("page", String(state.lib.page + 1));
    }
    const qs = params.toString();
    return (mediaId ? `/m/${mediaId}` : "/") + (qs ? `?${qs}` : "");
  }

  async function route(autoplay) {
    const r = parseRoute();
    if (!r.mediaId && JSON.stringify(r.filters) !== JSON.stringify(state.filters)) {
      state.filters = r.filters;
      runSearch(true);
    }
    if (!r.q && JSON.stringify(r.lib) !== JSON.stringify(state.lib)) {
      state.lib = r.lib;
      if (!state.q) loadLibrary();
    }
    if (r.q !== state.q || r.group !== state.group) {
      $("q").value = r.q;
      state.q = r.q;
      state.group = r.group;
      runSearch(true);
    }
    if (r.mediaId) {
      await openMedia(r.mediaId, r.t, autoplay);
    } else {
      closePlayer(false);
    }
  }

  // ---- search ------------------------------------------------------------------------------

  let debounceTimer = null;

  function onInput() {
    clearTimeout(debounceTimer);
    debounceTimer = setTimeout(() => {
      state.q = $("q").value;
      const r = parseRoute();
      history.replaceState(null, "", urlFor(r.mediaId, r.mediaId ? currentTime(r.t) : 0, state.q.trim()));
      runSearch(true);
    }, DEBOUNCE_MS);
  }

  function searchParams() {
    const f = state.filters;
    return { q: state.q.trim(), lang: f.lang, kind: f.kind, emotion: f.emotion, path: f.path,
             source: f.source, event: f.event, date: f.date, group: state.group === "media" ? "media" : null };
  }

  async function runSearch(reset) {
    if (reset) state.offset = 0;
    const my = ++state.seq;
    if (state.controller) state.controller.abort();
    const controller = new AbortController();
    state.controller = controller;
    const params = searchParams();
    if (!params.q) {
      renderResults(null, true);
      renderIdleSummary();
      loadFacets(params, my, controller.signal);
      loadLibrary();
      return;
    }
    $("library").hidden = true;
    try {
      const result = await api("/api/search", { ...params, limit: PAGE, offset: state.offset }, controller.signal);
      delete params.group; // facets count moments either way
      if (my !== state.seq) return; // a newer query was typed meanwhile: drop this answer
      renderResults(result, reset);
      // Facets cost more than the search: ask once typing has paused.
      if (reset) {
        clearTimeout(state.facetTimer);
        state.facetTimer = setTimeout(() => { if (my === state.seq) loadFacets(params, my, controller.signal); }, FACET_DELAY_MS);
      }
    } catch (e) {
      if (e.name === "AbortError" || my !== state.seq) return;
      $("summary").textContent = `Search failed: ${e.message}`;
    }
  }

  // ---- library ------------------------------------------------------------------------------

  async function loadLibrary() {
    const my = ++state.libSeq;
    const f = state.filters;
    let page;
    try {
      page = await api("/api/media", { sort: state.lib.sort, kind: state.lib.kind, lang: f.lang, path: f.path,
                                       date: f.date, limit: LIB_PAGE, offset: state.lib.page * LIB_PAGE });
    } catch (e) {
      if (my === state.libSeq) $("library-note").textContent = `Could not list the library: ${e.message}`;
      return;
    }
    if (my !== state.libSeq || state.q.trim()) return;
    renderLibrary(page);
  }

  function renderLibrary(page) {
    $("library").hidden = page.total === 0 && !state.lib.kind && !state.filters.lang && !state.filters.path
      && !state.filters.date;
    $("lib-sort").value = state.lib.sort;
    $("lib-kind").value = state.lib.kind;
    const list = $("library-list");
    list.replaceChildren();
    for (const m of page.items) {
      const li = el("li", "lib-item");
      const b = el("button", "lib-open");
      b.type = "button";
      b.dataset.id = m.id;
      b.append(artwork(m, "lib-art"), el("span", "lib-title", m.title));
      const meta = [folderLabel(m.folder)];
      if (m.duration) meta.push(clock(m.duration));
      if (m.added) meta.push(`added ${new Date(m.added * 1000).toISOString().slice(0, 10)}`);
      if (m.language) meta.push(m.language);
      if (m.engine) meta.push(m.engine);
      if (m.route) meta.push(m.route);
      if (m.cost) meta.push(`cost ${m.cost.toFixed(4)}`);
      if (m.failed) meta.push("failed");
      else if (m.status !== "indexed") meta.push(m.status);
      b.append(el("span", "lib-meta", meta.join(" · ")));
      b.title = m.failed ? `${m.path}\n${m.failed}` : m.path;
      li.append(b);
      if (m.failed) {
        b.querySelector(".lib-meta").classList.add("lib-failed");
        const retry = el("button", "button small lib-retry", "Retry");
        retry.type = "button";
        retry.dataset.retry = m.id;
        retry.setAttribute("aria-label", `Retry ${m.title}`);
        li.append(retry);
      }
      list.append(li);
    }
    const pages = Math.max(1, Math.ceil(page.total / LIB_PAGE));
    $("lib-page").textContent = `Page ${state.lib.page + 1} of ${pages} · ${page.total} recording${page.total === 1 ? "" : "s"}`;
    $("lib-prev").disabled = state.lib.page === 0;
    $("lib-next").disabled = state.lib.page + 1 >= pages;
    $("library-note").textContent = "";
  }

  // a recording's cover art (or video frame); a placeholder when it has none (404)
  function artwork(m, cls) {
    const none = () => Object.assign(el("span", `art art-none ${cls}`, m.has_video ? "▶" : "♪"), { ariaHidden: "true" });
    if (!m.artwork_url) return none();
    const img = el("img", `art ${cls}`);
    img.alt = "";
    img.loading = "lazy";
    img.decoding = "async";
    img.addEventListener("error", () => img.replaceWith(none()), { once: true });
    img.src = m.artwork_url;
    return img;
  }

  function setLibrary(change) {
    Object.assign(state.lib, change);
    history.pushState(null, "", urlFor(null, 0, ""));
    loadLibrary();
  }

  async function loadFacets(params, my, signal) {
    try {
      const f = await api("/api/facets", params, signal);
      if (my !== state.seq) return;
      renderFacets(f);
    } catch (e) {
      if (e.name !== "AbortError") $("filters").hidden = true;
    }
  }

  function renderIdleSummary() {
    const s = state.status;
    $("more").hidden = true;
    if (s && s.media > 0) {
      const minutes = Math.round(s.hours_indexed * 60);
      const hours = s.hours_indexed >= 1 ? `${s.hours_indexed.toFixed(1)} hours` : `${minutes} minute${minutes === 1 ? "" : "s"}`;
      $("summary").textContent = `Search ${s.media} recording${s.media === 1 ? "" : "s"} (${hours}) by what is said in them.`;
    } else {
      $("summary").textContent = "";
    }
  }

  function renderResults(result, reset) {
    const list = $("results");
    if (reset) list.replaceChildren();
    $("group-toggle").hidden = !result;
    $("group-toggle").setAttribute("aria-pressed", state.group === "none" ? "true" : "false");
    if (!result) { $("more").hidden = true; return; }
    state.total = result.total;
    const shown = state.offset + result.hits.length;
    const unit = result.groups ? "recording" : "moment";
    if (!result.hits.length && reset) {
      $("summary").textContent = `No match for “${result.query}”.`;
    } else {
      const partial = result.partial ? " No recording has every word; these have the most." : "";
      const forgiven = (result.forgiven || []).map((f) => `${f.word} → ${f.matched.join(", ")}`).join("; ");
      const note = result.did_you_mean ? ` No exact match; showing results for “${result.did_you_mean}”.`
        : forgiven ? ` Also matched: ${forgiven}.` : "";
      $("summary").textContent = `${result.total} ${unit}${result.total === 1 ? "" : "s"} found.${partial}${note}`;
    }
    if (result.groups) result.groups.forEach((g, i) => list.append(renderGroup(g, state.offset + i)));
    else result.hits.forEach((hit, i) => list.append(renderHit(hit, state.offset + i)));
    $("more").hidden = shown >= result.total;
  }

  function renderHit(hit, n) {
    const li = el("li", "hit-item");
    const a = el("a", "hit");
    a.href = urlFor(hit.media_id, hit.jump, state.q.trim());
    a.dataset.mediaId = hit.media_id;
    a.dataset.jump = String(hit.jump);
    a.dataset.index = String(n);
    const head = el("div", "hit-head");
    const chip = el("span", "chip", clock(hit.time));
    chip.setAttribute("aria-label", `at ${clock(hit.time)}`);
    head.append(chip, el("span", "hit-title", hit.title || hit.path));
    const kind = hit.kind && hit.kind !== "speech" ? hit.kind : null;
    const where = hit.match === "title" ? "title" : null;
    const source = hit.source && hit.source !== "asr" ? hit.source : null; // lyrics, subtitle, sound
    for (const tag of [where, hit.language, kind, source, hit.emotion]) if (tag) head.append(el("span", "tag", tag));
    const snip = el("p", "snippet");
    appendSnippet(snip, hit.snippet);
    a.append(head, snip, el("p", "hit-folder", folderLabel(hit.folder || "")));
    a.addEventListener("click", (ev) => {
      if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return; // new tab etc.
      ev.preventDefault();
      selectHit(a);
      history.pushState(null, "", a.getAttribute("href"));
      openMedia(hit.media_id, hit.jump, true);
    });
    li.append(a);
    return li;
  }

  // One recording with several moments: its best hit (title, snippet, folder), then a chip per
  // moment in time order; a chip plays from that moment.
  function renderGroup(g, n) {
    const li = renderHit(g.best, n);
    li.classList.add("group");
    if (g.moments.length < 2) return li;
    const box = el("div", "moments");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", `${g.moments_total} moments in ${g.title}`);
    for (const m of g.moments) {
      const b = el("a", "moment", clock(m.time));
      b.href = urlFor(m.media_id, m.jump, state.q.trim());
      b.dataset.jump = String(m.jump);
      b.title = m.text;
      b.setAttribute("aria-label", `Play from ${clock(m.time)}: ${m.text}`);
      b.addEventListener("click", (ev) => {
        if (ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
        ev.preventDefault();
        selectHit(li.querySelector(".hit"));
        history.pushState(null, "", b.getAttribute("href"));
        openMedia(m.media_id, m.jump, true);
      });
      box.append(b);
    }
    const more = g.moments_total - g.moments.length;
    if (more > 0) box.append(el("span", "muted moments-more", `+${more} more`));
    li.append(box);
    return li;
  }

  function setGroup(group) {
    state.group = group;
    const r = parseRoute();
    history.pushState(null, "", urlFor(r.mediaId, r.mediaId ? currentTime(r.t) : 0, state.q.trim()));
    runSearch(true);
  }

  function selectHit(a) {
    document.querySelectorAll(".hit[aria-current]").forEach((h) => h.removeAttribute("aria-current"));
    a.setAttribute("aria-current", "true");
  }

  // ---- facets ------------------------------------------------------------------------------

  const FACETS = [
    ["language", "lang", "Language"],
    ["kind", "kind", "Kind"],
    ["emotion", "emotion", "Emotion"],
    ["source", "source", "Source"],
    ["event", "event", "Sound"],
    ["year", "date", "Year"],
    ["month", "date", "Month"],
    ["folder", "path", "Folder"],
  ];
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // The date chips: years, newest first; once a year is chosen, its months in calendar order.
  // [value, count, label, pressed, value after a click] like the other facets.
  function dateChips(key, counts, selected) {
    const year = selected ? selected.slice(0, 4) : null;
    if (key === "year") {
      const values = Object.entries(counts).sort((a, b) => (a[0] < b[0] ? 1 : -1));
      if (year && !values.some(([v]) => v === year)) values.unshift([year, 0]);
      return values.map(([v, n]) => [v, n, v, v === year, v === year ? null : v]);
    }
    if (!year) return [];
    return Object.entries(counts).filter(([v]) => v.length === 7 && v.startsWith(year + "-"))
      .sort((a, b) => (a[0] < b[0] ? -1 : 1))
      .map(([v, n]) => [v, n, MONTHS[parseInt(v.slice(5), 10) - 1] || v, v === selected, v === selected ? year : v]);
  }

  function renderFacets(f) {
    const box = $("filters");
    box.replaceChildren();
    let any = false;
    for (const [key, param, label] of FACETS) {
      const counts = f[key] || {};
      let entries = Object.entries(counts).sort((a, b) => b[1] - a[1]);
      const selected = state.filters[param];
      const dates = param === "date" ? dateChips(key, counts, selected) : null;
      if (dates ? !dates.length : !entries.length && !selected) continue;
      if (key === "folder") entries = entries.slice(0, 12);
      const group = el("div", "facet");
      group.setAttribute("role", "group");
      const title = el("span", "facet-title", label);
      title.id = `facet-${key}`;
      group.setAttribute("aria-labelledby", title.id);
      group.append(title);
      const values = dates || entries.map(([v, n]) => [key === "folder" ? v + "/" : v, n, key === "folder" ? folderLabel(v) : v]);
      if (!dates && selected && !values.some(([v]) => v === selected)) {
        values.unshift([selected, 0, key === "folder" ? folderLabel(selected.replace(/\/$/, "")) : selected]);
      }
      for (const [value, n, text, pressed, next] of values) {
        const b = el("button", "facet-btn");
        b.type = "button";
        const on = dates ? pressed : selected === value;
        b.setAttribute("aria-pressed", on ? "true" : "false");
        b.title = key === "folder" ? value : `${label}: ${text}`;
        b.append(el("span", "facet-val", text));
        if (n) b.append(el("span", "count", f.estimated ? `~${n}` : n));
        b.addEventListener("click", () => {
          state.filters[param] = dates ? next : on ? null : value;
          if (!state.media) history.pushState(null, "", urlFor(null, 0, state.q.trim()));
          runSearch(true);
        });
        group.append(b);
      }
      box.append(group);
      any = true;
    }
    box.hidden = !any;
  }

  // ---- player ------------------------------------------------------------------------------

  function currentTime(fallback) {
    return state.player ? state.player.currentTime : fallback || 0;
  }

  async function openMedia(mediaId, t, autoplay) {
    const pane = $("player-pane");
    pane.hidden = false;
    document.body.classList.add("has-player");
    const my = ++state.mediaSeq;
    if (state.media && state.media.id === mediaId && state.player) {
      seekAndPlay(t, autoplay);
      return;
    }
    $("media-note").textContent = "Loading…";
    let media;
    try {
      media = await api(`/api/media/${encodeURIComponent(mediaId)}`);
    } catch (e) {
      if (my !== state.mediaSeq) return; // another media was opened (or the player closed) meanwhile
      $("media-title").textContent = "Not found";
      document.querySelector(".media-art")?.remove();
      $("media-meta").textContent = "";
      $("media-note").textContent = e.status === 404 || e.status === 400 ? "This recording is not in the index (or its file is gone)." : `Could not load: ${e.message}`;
      if (state.player) state.player.pause(); // a detached media element would play on
      $("player-box").replaceChildren();
      $("transcript").replaceChildren();
      $("exports").replaceChildren();
      $("clip-link").hidden = true;
      $("failed-box").hidden = true;
      $("manage").hidden = true;
      $("manage-note").textContent = "";
      state.media = null;
      state.player = null;
      return;
    }
    if (my !== state.mediaSeq) return;
    state.media = media;
    $("media-title").textContent = media.title;
    document.querySelector(".media-art")?.remove();
    $("media-title").before(artwork(media, "media-art"));
    document.title = `${media.title} · mediaindex`;
    const meta = [media.path];
    if (media.duration) meta.push(clock(media.duration));
    if (media.language) meta.push(media.language);
    const tr = media.transcript; // which engine (and model), the route a cloud engine took, what it cost
    if (tr) meta.push([tr.engine, tr.model !== tr.engine ? tr.model : "", tr.route || ""].filter(Boolean).join(" "));
    if (media.cost) meta.push(`cost ${media.cost.toFixed(4)}`);
    $("media-meta").textContent = meta.join(" · ");
    $("media-meta").title = media.path;
    $("media-note").textContent = media.playable ? "" : OFFLINE;
    $("clip-link").hidden = !media.playable;
    renderManage(media);
    renderExports(media);
    renderTranscript(media);
    renderTimeline(media);
    if (!media.playable) { // no player that cannot play: the note says why
      if (state.player) state.player.pause();
      $("player-box").replaceChildren();
      state.player = null;
      return;
    }

    const player = document.createElement(media.has_video ? "video" : "audio");
    player.id = "player";
    player.controls = true;
    player.preload = "auto";
    player.setAttribute("aria-label", `${media.has_video ? "Video" : "Audio"}: ${media.title}`);
    if (media.has_video) {
      player.playsInline = true;
      const track = document.createElement("track");
      track.kind = "captions";
      track.label = "Transcript";
      track.srclang = media.language || "en";
      track.src = media.captions_url;
      track.default = true;
      player.append(track);
    }
    player.src = media.stream_url;
    player.addEventListener("timeupdate", () => highlight(false));
    player.addEventListener("seeked", () => highlight(true));
    player.addEventListener("play", tick);
    player.addEventListener("error", async () => {
      // A file gone since the page loaded also lands here: ask the server which it is.
      let gone = false;
      try { gone = (await fetch(media.stream_url, { method: "HEAD", credentials: "same-origin", cache: "no-store" })).status === 404; } catch (e) { /* offline server */ }
      if (state.player !== player) return;
      $("media-note").textContent = gone ? OFFLINE : "This browser cannot play this file's format. Download the clip or export the transcript instead.";
      if (gone) $("clip-link").hidden = true;
    });
    if (state.player) state.player.pause();
    $("player-box").replaceChildren(player);
    state.player = player;
    seekAndPlay(t, autoplay);
  }

  // Retry (a failed file) and re-transcribe with another engine: queued for the indexer.
  function renderManage(media) {
    const failed = media.failed || [];
    $("failed-box").hidden = !failed.length;
    $("failed-why").textContent = failed.length ? `Indexing failed: ${failed[0].error || "unknown error"}` : "";
    $("retry-btn").disabled = false;
    $("reindex-btn").disabled = false;
    $("manage-note").textContent = "";
    $("manage").hidden = false;
    loadEngines();
  }

  async function loadEngines() {
    if (state.engines) return;
    state.engines = [];
    try {
      const r = await api("/api/transcribers");
      state.engines = r.transcribers;
      const sel = $("engine-select");
      sel.replaceChildren();
      for (const t of r.transcribers) {
        const o = el("option", null, t.paid ? `${t.name} (paid)` : t.name);
        o.value = t.name;
        if (t.name === r.default) o.selected = true;
        sel.append(o);
      }
    } catch (e) {
      state.engines = null; // try again next time
    }
  }

  async function mediaAction(button, path, body, what) {
    if (!state.media) return;
    button.disabled = true;
    try {
      $("manage-note").textContent = queuedNote(await post(`/api/media/${state.media.id}/${path}`, body), what);
      pollStatus();
    } catch (e) {
      $("manage-note").textContent = `Could not ${what.toLowerCase()}: ${e.message}`;
      button.disabled = false;
    }
  }

  function renderExports(media) {
    const exports = $("exports");
    exports.replaceChildren();
    for (const [fmt, url] of Object.entries(media.exports || {})) {
      const a = el("a", "button small", fmt.toUpperCase());
      a.href = url;
      a.setAttribute("download", "");
      a.setAttribute("aria-label", `Export transcript as ${fmt.toUpperCase()}`);
      exports.append(a);
    }
  }

  function seekAndPlay(t, autoplay) {
    const p = state.player;
    if (!p) return;
    let target = Math.max(0, t || 0);
    const go = () => {
      // a link past the end (?t=9999 on a 25 s file) starts at the last moment, not hours in
      const duration = Number.isFinite(p.duration) && p.duration > 0 ? p.duration : (state.media && state.media.duration);
      if (duration && target > duration) target = Math.max(0, duration - LEAD_S);
      if (Math.abs(p.currentTime - target) > 0.25) p.currentTime = target;
      highlight(true);
      if (autoplay !== false) {
        const pr = p.play();
        if (pr && pr.catch) pr.catch(() => { $("media-note").textContent = `Ready at ${clock(target)}: press play.`; });
      }
    };
    if (p.readyState >= 1) go();
    else p.addEventListener("loadedmetadata", go, { once: true });
    if (window.matchMedia("(max-width: 900px)").matches) $("player-pane").scrollIntoView({ block: "start" });
  }

  function closePlayer(push) {
    state.mediaSeq++;
    if (state.player) state.player.pause();
    $("player-pane").hidden = true;
    document.body.classList.remove("has-player");
    $("player-box").replaceChildren();
    state.player = null;
    state.media = null;
    state.words = [];
    document.title = "mediaindex";
    if (push) history.pushState(null, "", urlFor(null, 0, state.q.trim()));
  }

  // ---- transcript --------------------------------------------------------------------------

  function renderTranscript(media) {
    const box = $("transcript");
    box.replaceChildren();
    state.words = [];
    state.current = null;
    if (!media.segments.length) {
      box.append(el("p", "muted", media.status === "indexed" ? "No speech in this recording." : `No transcript yet (${media.status}).`));
      return;
    }
    for (const seg of media.segments) {
      const p = el("p", "seg");
      p.dataset.start = String(seg.start);
      const ts = el("button", "seg-time", clock(seg.start));
      ts.type = "button";
      ts.dataset.start = String(seg.start);
      ts.setAttribute("aria-label", `Play from ${clock(seg.start)}`);
      p.append(ts, " ");
      const words = seg.words && seg.words.length ? seg.words : [{ text: seg.text, start: seg.start, end: seg.end }];
      for (const [text, w] of wordPieces(seg.text || "", words)) {
        if (!w) { p.append(text); continue; }
        const s = el("span", "w", text);
        s.dataset.start = String(w.start);
        p.append(s);
        state.words.push({ start: w.start, el: s });
      }
      box.append(p);
    }
    state.words.sort((a, b) => a.start - b.start);
  }

  // A strip under the player: speech / singing / music stretches and sound events; a click seeks.
  function renderTimeline(media) {
    const box = $("timeline");
    box.replaceChildren();
    const total = media.duration || Math.max(0, ...media.segments.map((s) => s.end));
    box.hidden = !total || !media.segments.length;
    if (box.hidden) return;
    for (const seg of media.segments) {
      const kind = ["speech", "singing", "music"].includes(seg.kind) ? seg.kind : "other";
      const b = el("button", `tl tl-${kind}`);
      b.type = "button";
      b.style.left = `${(100 * seg.start) / total}%`;
      b.style.width = `${Math.max(0.4, (100 * (seg.end - seg.start)) / total)}%`;
      b.dataset.start = String(seg.start);
      const events = (seg.events || []).join(", ");
      b.title = `${clock(seg.start)} ${kind}${events ? ": " + events : ""}`;
      b.setAttribute("aria-label", `Play ${kind}${events ? " (" + events + ")" : ""} from ${clock(seg.start)}`);
      if (events) b.classList.add("tl-event");
      box.append(b);
    }
  }

  // The segment's text as [text, word] pieces (word null for the text between words): the
  // engine's tokens carry their own spacing ("50" ",000"), so the text shows as the export
  // does. Words not found in the text (an engine that normalises it) are joined by spaces.
  function wordPieces(text, words) {
    const out = [];
    let at = 0;
    for (const w of words) {
      const token = (w.text || "").trim();
      const i = token ? text.indexOf(token, at) : -1;
      if (i < 0) return spacedPieces(words);
      if (i > at) out.push([text.slice(at, i), null]);
      out.push([token, w]);
      at = i + token.length;
    }
    if (at < text.length) out.push([text.slice(at), null]);
    return out;
  }

  function spacedPieces(words) {
    const out = [];
    words.forEach((w, i) => {
      out.push([w.text.trim(), w]);
      const next = words[i + 1];
      if (next && !(CJK.test(w.text.slice(-1)) && CJK.test(next.text.charAt(0)))) out.push([" ", null]);
    });
    return out;
  }

  function onTranscriptClick(ev) {
    const target = ev.target.closest("[data-start]");
    if (!target || !state.player || target.classList.contains("seg")) return;
    const t = parseFloat(target.dataset.start);
    if (!Number.isFinite(t)) return;
    state.player.currentTime = t;
    const pr = state.player.play();
    if (pr && pr.catch) pr.catch(() => {});
  }

  function wordAt(t) {
    const w = state.words;
    let lo = 0, hi = w.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (w[mid].start <= t + 0.05) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    return found >= 0 ? w[found].el : null;
  }

  function highlight(force) {
    if (!state.player) return;
    const cur = wordAt(state.player.currentTime);
    if (cur === state.current && !force) return;
    if (state.current) { state.current.classList.remove("current"); state.current.removeAttribute("aria-current"); }
    state.current = cur;
    if (!cur) return;
    cur.classList.add("current");
    cur.setAttribute("aria-current", "time");
    if (Date.now() - state.userScrolledAt > 4000) {
      const box = $("transcript");
      const top = cur.offsetTop - box.offsetTop;
      if (top < box.scrollTop + 20 || top > box.scrollTop + box.clientHeight - 40) {
        box.scrollTop = Math.max(0, top - box.clientHeight / 3);
      }
    }
  }

  function tick() {
    if (!state.player || state.player.paused || state.player.ended) return;
    highlight(false);
    requestAnimationFrame(tick);
  }

  // ---- moment actions ----------------------------------------------------------------------

  function toast(msg) {
    const t = $("toast");
    t.textContent = msg;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { t.textContent = ""; }, 3000);
  }

  async function copyLink() {
    if (!state.media) return;
    const url = location.origin + urlFor(state.media.id, currentTime(0), "");
    history.replaceState(null, "", urlFor(state.media.id, currentTime(0), state.q.trim()));
    try {
      await navigator.clipboard.writeText(url);
      toast(`Link copied: ${url}`);
    } catch (e) {
      toast(`Copy this link: ${url}`);
    }
  }

  function updateClipLink() {
    if (!state.media) return;
    const t = currentTime(0);
    $("clip-link").href = `${state.media.clip_url}?t=${t.toFixed(2)}&before=10&after=10`;
  }

  // ---- status ------------------------------------------------------------------------------

  async function pollStatus() {
    clearTimeout(state.statusTimer);
    let delay = 10000;
    try {
      const s = await api("/api/status");
      state.status = s;
      renderStatus(s);
      const busy = (s.jobs && (s.jobs.queued || s.jobs.running)) || s.files.queued || s.files.running;
      delay = busy || !$("status-panel").hidden ? 3000 : 10000;
    } catch (e) {
      $("status-label").textContent = e.status === 401 ? "Locked" : "Offline";
      $("status-dot").className = "dot bad";
    }
    state.statusTimer = setTimeout(pollStatus, delay);
  }

  function renderStatus(s) {
    const f = s.files;
    const waiting = (f.queued || 0) + (f.running || 0);
    $("st-media").textContent = s.media;
    $("st-hours").textContent = (s.hours_indexed || 0).toFixed(1);
    $("st-queued").textContent = waiting;
    $("st-failed").textContent = f.failed || 0;
    $("st-spent").textContent = (s.spent || 0).toFixed(2);
    const done = (f.indexed || 0) + (f.failed || 0);
    const total = f.total || 0;
    $("st-progress").max = Math.max(1, total);
    $("st-progress").value = done;
    $("st-progress-label").textContent = total ? `${done} of ${total} files processed` : "No files seen yet";
    const dot = $("status-dot");
    if (waiting) {
      $("status-label").textContent = `Indexing ${waiting}`;
      dot.className = "dot busy";
    } else if (f.failed) {
      $("status-label").textContent = `${f.failed} failed`;
      dot.className = "dot warn";
    } else {
      $("status-label").textContent = `${s.media} indexed`;
      dot.className = "dot ok";
    }
    const roots = $("st-roots");
    roots.replaceChildren();
    for (const r of s.roots || []) {
      const li = el("li", null, r.path);
      if (r.status === "offline") li.append(" ", el("span", "tag warn", "offline"));
      roots.append(li);
    }
    if (!(s.roots || []).length) roots.append(el("li", "muted", "none yet"));
    renderWorkers(s.queue);
    const failed = s.failed || [];
    $("st-failed-box").hidden = !failed.length;
    const fl = $("st-failed-list");
    fl.replaceChildren();
    for (const item of failed) {
      const li = el("li");
      li.append(el("span", "path", item.path), el("span", "err", item.error || ""));
      fl.append(li);
    }
    const more = (f.failed || 0) - failed.length;
    if (more > 0) fl.append(el("li", "muted", `and ${more} more (mediaindex status lists them all)`));
    // First run: nothing indexed yet.
    const empty = s.media === 0;
    $("empty").hidden = !empty;
    $("empty-progress").textContent = waiting
      ? `Indexing ${waiting} file${waiting === 1 ? "" : "s"} now… results will appear here.`
      : "This page updates by itself while files are being indexed.";
    if (!state.q.trim()) renderIdleSummary();
  }

  function renderWorkers(q) {
    // --queue: the workers on other machines, what each is doing, the queue's depth and pace
    $("st-workers-box").hidden = !q;
    if (!q) return;
    const list = $("st-workers");
    list.replaceChildren();
    if (q.error) {
      $("st-queue").textContent = `Queue ${q.url} unreachable: ${q.error}`;
      return;
    }
    $("st-queue").textContent = `${q.workers.length} worker${q.workers.length === 1 ? "" : "s"} · ` +
      `${q.queue.queued} waiting · ${q.per_minute} files/min`;
    for (const w of q.workers) {
      const doing = w.doing.map((d) => `${d.stage} ${d.path}`).join("; ") || "idle";
      const li = el("li", null, `${w.id}: ${w.done} done`);
      li.append(" ", el("span", "muted", doing));
      list.append(li);
    }
  }

  function toggleStatus() {
    const panel = $("status-panel");
    panel.hidden = !panel.hidden;
    $("status-toggle").setAttribute("aria-expanded", panel.hidden ? "false" : "true");
    if (!panel.hidden) pollStatus();
  }

  // ---- login (only when the server was started with a token) ------------------------------

  function showLogin() {
    $("login").hidden = false;
    $("token").focus();
  }

  async function login(ev) {
    ev.preventDefault();
    const token = $("token").value;
    const res = await fetch("/api/login", {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }),
    });
    if (res.ok) {
      $("login").hidden = true;
      $("login-error").textContent = "";
      $("token").value = "";
      pollStatus();
      state.q = null; // force a fresh search
      route(false);
    } else if (res.status === 429) {
      const wait = res.headers.get("Retry-After") || "a few";
      $("login-error").textContent = `Too many wrong tokens: try again in ${wait} s.`;
    } else {
      $("login-error").textContent = "That token is not right.";
    }
  }

  // ---- keyboard ----------------------------------------------------------------------------

  function hits() { return Array.from(document.querySelectorAll("#results .hit")); }

  function onKey(ev) {
    const active = document.activeElement;
    const typing = active && (active.tagName === "INPUT" || active.tagName === "TEXTAREA" || active.isContentEditable);
    if (ev.key === "/" && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey) {
      ev.preventDefault();
      $("q").focus();
      $("q").select();
      return;
    }
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      const list = hits();
      if (!list.length) return;
      const i = list.indexOf(active);
      if (active === $("q") && ev.key === "ArrowDown") {
        ev.preventDefault();
        list[0].focus();
      } else if (i >= 0) {
        ev.preventDefault();
        if (ev.key === "ArrowDown") list[Math.min(list.length - 1, i + 1)].focus();
        else if (i === 0) $("q").focus();
        else list[i - 1].focus();
      }
      return;
    }
    if (ev.key === "Escape" && active === $("q") && $("q").value) {
      $("q").value = "";
      onInput();
    } else if (ev.key === "Escape" && !$("player-pane").hidden) {
      closePlayer(true);
    }
  }

  // ---- start -------------------------------------------------------------------------------

  function init() {
    $("q").addEventListener("input", onInput);
    $("search-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      clearTimeout(debounceTimer);
      state.q = $("q").value;
      runSearch(true);
      const first = hits()[0];
      if (first) first.focus();
    });
    $("more").addEventListener("click", () => {
      // from what is shown, not offset += PAGE: a second click while the first page is on its
      // way (it aborts the first) must not skip a page
      state.offset = $("results").children.length;
      runSearch(false);
    });
    $("group-toggle").addEventListener("click", () => setGroup(state.group === "none" ? "media" : "none"));
    $("transcript").addEventListener("click", onTranscriptClick);
    $("timeline").addEventListener("click", onTranscriptClick);
    $("lib-sort").addEventListener("change", () => setLibrary({ sort: $("lib-sort").value, page: 0 }));
    $("lib-kind").addEventListener("change", () => setLibrary({ kind: $("lib-kind").value, page: 0 }));
    $("lib-prev").addEventListener("click", () => setLibrary({ page: Math.max(0, state.lib.page - 1) }));
    $("lib-next").addEventListener("click", () => setLibrary({ page: state.lib.page + 1 }));
    $("library-list").addEventListener("click", async (ev) => {
      const retry = ev.target.closest(".lib-retry");
      if (retry) {
        retry.disabled = true;
        try { $("library-note").textContent = queuedNote(await post(`/api/media/${retry.dataset.retry}/retry`), "Retry"); } catch (e) { $("library-note").textContent = `Could not retry: ${e.message}`; retry.disabled = false; }
        pollStatus();
        return;
      }
      const b = ev.target.closest(".lib-open");
      if (!b) return;
      history.pushState(null, "", urlFor(b.dataset.id, 0, ""));
      openMedia(b.dataset.id, 0, true);
    });
    for (const evName of ["wheel", "touchmove"]) {
      $("transcript").addEventListener(evName, () => { state.userScrolledAt = Date.now(); }, { passive: true });
    }
    $("copy-link").addEventListener("click", copyLink);
    $("clip-link").addEventListener("click", updateClipLink);
    $("clip-link").addEventListener("focus", updateClipLink);
    $("clip-link").addEventListener("mouseenter", updateClipLink);
    $("close-player").addEventListener("click", () => closePlayer(true));
    $("status-toggle").addEventListener("click", toggleStatus);
    $("retry-btn").addEventListener("click", () => mediaAction($("retry-btn"), "retry", {}, "Retry"));
    $("reindex-btn").addEventListener("click", () => mediaAction(
      $("reindex-btn"), "reindex", { transcriber: $("engine-select").value }, "Re-transcribe"));
    $("retry-all").addEventListener("click", async () => {
      $("retry-all").disabled = true;
      try { $("st-note").textContent = queuedNote(await post("/api/retry"), "Retry"); } catch (e) { $("st-note").textContent = `Could not retry: ${e.message}`; }
      $("retry-all").disabled = false;
      pollStatus();
    });
    $("login-form").addEventListener("submit", login);
    $("home-link").addEventListener("click", (ev) => {
      if (ev.ctrlKey || ev.metaKey) return;
      ev.preventDefault();
      $("q").value = "";
      state.q = "";
      state.filters = { lang: null, kind: null, emotion: null, path: null, source: null, event: null, date: null };
      history.pushState(null, "", "/");
      closePlayer(false);
      runSearch(true);
    });
    document.addEventListener("keydown", onKey);
    window.addEventListener("popstate", () => route(false));
    const first = parseRoute();
    state.q = first.q;
    state.lib = first.lib;
    state.filters = first.filters;
    state.group = first.group;
    $("q").value = first.q;
    pollStatus();
    runSearch(true);
    if (first.mediaId) openMedia(first.mediaId, first.t, true);
    else $("q").focus();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();

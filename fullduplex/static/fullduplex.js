/*! fullduplex.js: the browser client of fullduplex. https://github.com/fullduplex
 *
 * A classic script: <script src="/fullduplex.js"> defines window.FullDuplexSocket and
 * window.fullduplex. ES modules import "/fullduplex.mjs", a three-line wrapper that
 * imports this file and re-exports what it defined. The file is also valid module
 * code (no `this` at top level, strict mode), which is what lets the wrapper import it;
 * evaluated twice (classic + module on one page) it keeps the first definition, so
 * `instanceof` and the rooms protocol work across both.
 *
 * FullDuplexSocket mirrors the standard WebSocket (readyState, bufferedAmount,
 * binaryType, protocol, extensions, url, send, close, on* handlers, EventTarget) and
 * adds: reconnect with exponential backoff and full jitter, a bounded send queue while
 * not open, and rooms (join/leave/publish, presence, history, resume after reconnect
 * with exactly the messages missed). Guide: docs/topics/browser-client.md.
 *
 * Where WebSocket cannot pass (a proxy strips Upgrade, antivirus breaks it), the socket
 * falls back by itself to the server's HTTP transports (streaming, Server-Sent Events,
 * long polling; wire format: docs/topics/transports.md), remembers the choice for the
 * tab and keeps probing WebSocket in the background to upgrade back.
 */
(function (root, factory) {
  "use strict";
  const api = root.fullduplex && root.fullduplex.FullDuplexSocket ? root.fullduplex : factory(root);
  root.fullduplex = api;
  root.FullDuplexSocket = api.FullDuplexSocket;
  if (typeof module === "object" && module && module.exports) module.exports = api;
})(globalThis, function (root) {
  "use strict";

  const CONNECTING = 0;
  const OPEN = 1;
  const CLOSING = 2;
  const CLOSED = 3;

  /** Close codes after which reconnecting would only repeat the fault (RFC 6455 §7.4.1):
   * 1000 the server ended the conversation, 1002 protocol error, 1003 unacceptable
   * data, 1007 bad UTF-8, 1008 policy violation, 1009 too big, 1010 missing extension.
   * 1001 (server going away), 1006 (connection lost), 1011, 1012, 1013 and the
   * application codes 3000–4999 are reconnected. */
  const FINAL_CODES = [1000, 1002, 1003, 1007, 1008, 1009, 1010];
  /** The server closes with this code when the connection's credential expired. */
  const AUTH_EXPIRED = 4001;

  /** Every transport, in the order tried by default. */
  const TRANSPORTS = ["websocket", "streaming", "sse", "polling"];
  /** sessionStorage key prefix: the transport a tab settled on, per URL. */
  const MEMORY_KEY = "fullduplex.transport ";
  /** Background WebSocket probes never wait longer than this (ms). */
  const MAX_PROBE_DELAY = 300000;

  /**
   * @typedef {object} FullDuplexOptions
   * @property {typeof WebSocket} [WebSocket] the implementation to use (default: globalThis.WebSocket)
   * @property {boolean} [reconnect=true] reconnect after a connection is lost
   * @property {number} [minDelay=500] ms: the first reconnect waits up to this long
   * @property {number} [maxDelay=30000] ms: no reconnect waits longer
   * @property {number} [factor=2] the cap on the wait grows by this factor per attempt
   * @property {number} [maxRetries=Infinity] failed attempts in a row before giving up
   * @property {() => number} [random=Math.random] jitter source, in [0, 1)
   * @property {(event: CloseEvent) => boolean} [shouldReconnect] default: the code is not final (1000, 1002, 1003, 1007–1010)
   * @property {number} [maxQueue=1000] messages kept by send() while not open (0: throw InvalidStateError as the standard does)
   * @property {"throw"|"drop-oldest"} [queueOverflow="throw"] a full queue throws QuotaExceededError, or drops its oldest message
   * @property {boolean} [roomFramesAsMessages=false] also dispatch rooms-protocol frames as socket `message` events
   * @property {string[]} [transports] what may carry the socket, tried in this order (default: all,
   *   ["websocket", "streaming", "sse", "polling"]); ["polling"] forces one
   * @property {number} [openTimeout=2500] ms a WebSocket may take to open before the next transport is tried
   * @property {number} [firstByteTimeout=4000] ms a streaming or SSE response may take to show its first
   *   byte; longer means a buffering proxy, and the socket goes on with long polling
   * @property {number} [probeDelay=10000] ms on an HTTP transport before the first background WebSocket
   *   probe; it doubles after each failed probe (up to 5 minutes)
   * @property {boolean} [remember=true] keep the transport that worked in sessionStorage for this tab
   * @property {typeof fetch} [fetch] the fetch to use (default: globalThis.fetch)
   * @property {typeof EventSource} [EventSource] the EventSource to use (default: globalThis.EventSource)
   * @property {((event: {code: number, reason: string}) => Promise<string|string[]|undefined>)|null} [refreshAuth=null]
   *   after a close with 4001 (credential expired), called before reconnecting: fetch a new
   *   token; what it resolves to replaces the subprotocols (e.g. ["fd-auth", "fd-token." + token]),
   *   undefined keeps them (a refreshed cookie). A rejection closes the socket for good.
   */

  /** @type {Required<Omit<FullDuplexOptions, "WebSocket">>} */
  const DEFAULTS = {
    reconnect: true,
    minDelay: 500,
    maxDelay: 30000,
    factor: 2,
    maxRetries: Infinity,
    random: Math.random,
    shouldReconnect: (event) => FINAL_CODES.indexOf(event.code) < 0,
    maxQueue: 1000,
    queueOverflow: "throw",
    roomFramesAsMessages: false,
    transports: TRANSPORTS,
    openTimeout: 2500,
    firstByteTimeout: 4000,
    probeDelay: 10000,
    remember: true,
    refreshAuth: null,
  };

  // Room internals the socket calls; symbols keep them off the public surface.
  const JOIN_FRAME = Symbol("joinFrame");
  const RECEIVE = Symbol("receive");
  const DISCONNECTED = Symbol("disconnected");
  const FORGET = Symbol("forget");
  const TOKEN = Symbol("token");

  // -------------------------------------------------------------------- helpers

  /** A DOMException, or an Error with the same name where there is none. */
  function domError(message, name) {
    if (typeof DOMException === "function") return new DOMException(message, name);
    const error = new Error(message);
    error.name = name;
    return error;
  }

  /** An event of `type` carrying `props`, built with `Ctor` if this platform has it. */
  function makeEvent(Ctor, type, props) {
    if (typeof Ctor === "function") return new Ctor(type, props);
    const event = new Event(type);
    for (const key of Object.keys(props)) {
      Object.defineProperty(event, key, { value: props[key], enumerable: true });
    }
    return event;
  }

  function custom(type, detail) {
    return makeEvent(root.CustomEvent, type, { detail: detail });
  }

  /** Bytes `text` takes in UTF-8 (lone surrogates count as U+FFFD, 3 bytes). */
  function utf8Length(text) {
    let n = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        n += 4;
        i++;
      } else n += 3;
    }
    return n;
  }

  function isBlob(data) {
    return typeof Blob === "function" && data instanceof Blob;
  }

  function isBinary(data) {
    return data instanceof ArrayBuffer || ArrayBuffer.isView(data) || isBlob(data);
  }

  function byteSize(data) {
    if (typeof data === "string") return utf8Length(data);
    return isBlob(data) ? data.size : data.byteLength;
  }

  /** The URL the standard would use: resolved against the page, http(s) → ws(s). */
  function resolveURL(url) {
    const base = root.location && root.location.href;
    let parsed;
    try {
      parsed = new URL(String(url), base);
      if (parsed.protocol === "http:" || parsed.protocol === "https:") {
        parsed = new URL("ws" + parsed.href.slice(4));
      }
    } catch (_) {
      throw domError(`The URL '${url}' is invalid.`, "SyntaxError");
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw domError(`The URL's scheme must be 'ws', 'wss', 'http' or 'https'; '${parsed.protocol}' is not allowed.`, "SyntaxError");
    }
    if (parsed.href.indexOf("#") >= 0) {
      throw domError(`The URL contains a fragment identifier ('${parsed.hash}').`, "SyntaxError");
    }
    return parsed.href;
  }

  function checkOptions(options) {
    const o = Object.assign({}, DEFAULTS, options);
    const nonNegative = (name) => {
      if (typeof o[name] !== "number" || !(o[name] >= 0)) throw new RangeError(`options.${name} must be a number >= 0`);
    };
    ["minDelay", "maxDelay", "maxRetries", "maxQueue", "openTimeout", "firstByteTimeout", "probeDelay"].forEach(nonNegative);
    const list = o.transports;
    if (!Array.isArray(list) || !list.length || list.some((name) => TRANSPORTS.indexOf(name) < 0)) {
      throw new RangeError(`options.transports must be a non-empty list of ${TRANSPORTS.map((n) => `"${n}"`).join(", ")}`);
    }
    if (!(o.factor >= 1)) throw new RangeError("options.factor must be >= 1");
    if (o.queueOverflow !== "throw" && o.queueOverflow !== "drop-oldest") {
      throw new RangeError('options.queueOverflow must be "throw" or "drop-oldest"');
    }
    return o;
  }

  // `onfoo` handler properties: one listener per type, registered when first set and
  // keeping its place among the listeners when replaced, as the HTML standard does.
  const handlers = new WeakMap();

  function defineHandlers(Class, types) {
    for (const type of types) {
      Object.defineProperty(Class.prototype, "on" + type, {
        configurable: true,
        enumerable: true,
        get() {
          const slot = (handlers.get(this) || {})[type];
          return slot ? slot.fn : null;
        },
        set(fn) {
          let slots = handlers.get(this);
          if (!slots) handlers.set(this, (slots = {}));
          const slot = slots[type];
          if (typeof fn !== "function") {
            if (slot) this.removeEventListener(type, slot.listener);
            delete slots[type];
          } else if (slot) {
            slot.fn = fn;
          } else {
            const fresh = { fn: fn, listener: (event) => fresh.fn.call(this, event) };
            slots[type] = fresh;
            this.addEventListener(type, fresh.listener);
          }
        },
      });
    }
  }

  function defineStates(target) {
    const states = { CONNECTING, OPEN, CLOSING, CLOSED };
    for (const name of Object.keys(states)) {
      Object.defineProperty(target, name, { value: states[name], enumerable: true });
    }
  }

  // ------------------------------------------------------------ HTTP transports

  /** Standard base64 (with padding) of the bytes of `buffer`. */
  function toBase64(buffer) {
    const bytes = new Uint8Array(buffer);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(text);
  }

  /** The ArrayBuffer that standard base64 `text` encodes. */
  function fromBase64(text) {
    const chars = atob(text);
    const bytes = new Uint8Array(chars.length);
    for (let i = 0; i < chars.length; i++) bytes[i] = chars.charCodeAt(i);
    return bytes.buffer;
  }

  /** The platform can run `name` (fetch streaming needs response bodies as streams). */
  function supported(name, options) {
    switch (name) {
      case "websocket":
        return typeof (options.WebSocket || root.WebSocket) === "function";
      case "streaming":
        return typeof (options.fetch || root.fetch) === "function" && typeof ReadableStream === "function" && typeof TextDecoder === "function";
      case "sse":
        return typeof (options.fetch || root.fetch) === "function" && typeof (options.EventSource || root.EventSource) === "function";
      default:
        return typeof (options.fetch || root.fetch) === "function";
    }
  }

  /** Stop listening to a connection being dropped (errors still need a listener in Node's ws). */
  function detach(conn) {
    const ignore = () => {};
    conn.onmessage = conn.onclose = ignore;
    conn.onerror = ignore;
    conn.onopen = () => conn.close();
  }

  /** The tab's memory (sessionStorage), or null where there is none or it is refused. */
  function tabStorage() {
    try {
      return root.sessionStorage || null;
    } catch (_) {
      return null; // storage disabled for this page
    }
  }

  /**
   * One session of an HTTP fallback transport ("streaming", "sse" or "polling") with the
   * surface FullDuplexSocket uses of a WebSocket: readyState, protocol, bufferedAmount,
   * binaryType, send, close and the onopen/onmessage/onerror/onclose properties.
   *
   * Both directions are numbered records (docs/topics/transports.md): received ones at
   * or below the highest seen are repeats and dropped; sent ones stay queued until the
   * POST carrying them is answered, and a POST is retried unchanged, so nothing is lost
   * or taken twice. `buffered` is set when a streaming or SSE response showed no byte
   * within `firstByteTimeout` (a buffering proxy), which tells the socket to poll.
   */
  class HTTPTransport {
    /** @param {string} url ws(s): URL of the route; @param {string[]} protocols */
    constructor(url, protocols, transport, options) {
      this.transport = transport;
      this.readyState = CONNECTING;
      this.protocol = "";
      this.extensions = "";
      this.binaryType = "blob";
      this.buffered = false;
      this.onopen = null;
      this.onmessage = null;
      this.onerror = null;
      this.onclose = null;
      this._base = "http" + url.slice(2);
      this._protocols = protocols;
      this._fetch = options.fetch || root.fetch.bind(root);
      this._EventSource = options.EventSource || root.EventSource;
      this._firstByteTimeout = options.firstByteTimeout;
      this._canPoll = options.transports.indexOf("polling") >= 0;
      this._switching = false;
      this._session = null;
      this._info = { heartbeat: 15, poll_timeout: 25, max_buffer: 1048576, max_post: 1048576 };
      this._seen = 0; // highest server seq received
      this._acked = 0; // highest seq a request has carried as fd_ack
      this._unacked = 0; // bytes received since then
      this._sent = 0; // last client seq given out
      this._outbox = []; // {seq, line|null}, until a POST carrying them is answered
      this._outboxBytes = 0;
      this._posting = false;
      this._postFailures = 0;
      this._ackTimer = null;
      this._watchdog = null;
      this._timers = new Set();
      this._abort = null; // AbortController of the receiving request
      this._source = null; // EventSource
      this._closeCode = null; // our close record, once queued
      this._done = false;
      this._open();
    }

    get bufferedAmount() {
      return this._outboxBytes;
    }

    send(data) {
      if (this.readyState !== OPEN) {
        if (this.readyState === CONNECTING) throw domError("Still in CONNECTING state.", "InvalidStateError");
        return;
      }
      this._queue(data);
    }

    close(code, reason) {
      if (this.readyState === CLOSING || this.readyState === CLOSED) return;
      if (this.readyState === CONNECTING) {
        this._abandon();
        this._later(() => this._finish(1006, "", false), 0);
        return;
      }
      this.readyState = CLOSING;
      this._closeCode = code === undefined ? 1000 : code;
      this._enqueue({ close: this._closeCode, reason: reason || "" });
      // The server answers with its own close record; do not wait for it forever.
      this._later(() => this._finish(this._closeCode, reason || "", false), 5000);
    }

    // ------------------------------------------------------------ requests

    _url(params) {
      const url = new URL(this._base);
      for (const name of Object.keys(params)) url.searchParams.set(name, params[name]);
      return url.href;
    }

    _later(fn, ms) {
      const timer = setTimeout(() => {
        this._timers.delete(timer);
        fn();
      }, ms);
      this._timers.add(timer);
      return timer;
    }

    async _request(url, init, timeout) {
      const controller = typeof AbortController === "function" ? new AbortController() : null;
      const timer = timeout ? this._later(() => controller && controller.abort(), timeout) : null;
      try {
        return await this._fetch(url, Object.assign({ cache: "no-store", credentials: "same-origin", signal: controller && controller.signal }, init));
      } finally {
        if (timer !== null) {
          clearTimeout(timer);
          this._timers.delete(timer);
        }
      }
    }

    async _open() {
      const params = { fd_transport: this.transport };
      if (this._protocols.length) params.fd_protocols = this._protocols.join(",");
      let response;
      let info;
      try {
        response = await this._request(this._url(params), { method: "POST" }, 30000);
        if (response.ok) info = await response.json();
      } catch (_) {
        return this._fail(1006);
      }
      if (info && typeof info.session === "string") this._session = info.session;
      if (this._done) return this._abandon(); // closed while opening: end the new session
      if (!response.ok) return this._status(response.status);
      if (this._session === null) return this._fail(1002);
      this._info = Object.assign(this._info, info);
      this.protocol = info.subprotocol || "";
      if (this.transport === "polling") {
        this._opened();
        this._poll();
        return;
      }
      // Open once the first byte arrives. None in time: a proxy is buffering; the
      // session goes on with long polling (or is given up if that is not allowed).
      this._later(() => {
        if (this.readyState !== CONNECTING || this._done) return;
        this.buffered = true;
        if (!this._canPoll) {
          this._abandon();
          return this._fail(1006);
        }
        this._stopReceiving();
        this.transport = "polling";
        this._switching = true;
        this._opened();
        this._poll();
      }, this._firstByteTimeout);
      if (this.transport === "sse") this._listen();
      else this._stream();
    }

    /** An error answer: 404 and the lost-session ones are worth another try, the rest is final. */
    _status(status) {
      if (status === 403) return this._fail(1008);
      if (status === 400 || status === 405 || status === 413) return this._fail(1002);
      return this._fail(1006); // 404, 410, 503, a proxy's 502/504…
    }

    _opened() {
      if (this.readyState !== CONNECTING || this._done) return;
      this.readyState = OPEN;
      if (this.onopen) this.onopen({ type: "open" });
    }

    _receiving() {
      return !this._done;
    }

    /** Stop the watchdog of a long response. */
    _calm() {
      if (this._watchdog !== null) {
        clearTimeout(this._watchdog);
        this._timers.delete(this._watchdog);
        this._watchdog = null;
      }
    }

    /** Up to three quick retries of a receiving request that failed on the network. */
    async _retry(failures) {
      if (failures > 3 || !this._receiving()) return false;
      await new Promise((resolve) => this._later(resolve, 250 * failures));
      return this._receiving();
    }

    async _stream() {
      let failures = 0;
      while (this._receiving() && this.transport === "streaming") {
        const controller = typeof AbortController === "function" ? new AbortController() : null;
        this._abort = controller;
        const silent = () => controller && controller.abort();
        this._alive(silent);
        let ended = false;
        try {
          const ack = this._seen;
          const response = await this._fetch(this._url({ fd_session: this._session, fd_ack: String(ack) }), {
            cache: "no-store",
            credentials: "same-origin",
            signal: controller && controller.signal,
          });
          if (!response.ok) return this._receiving() && this._status(response.status);
          this._acknowledged(ack);
          const reader = response.body.getReader();
          const decoder = new TextDecoder();
          let pending = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done || !this._receiving()) break;
            failures = 0;
            this._alive(silent);
            this._opened();
            pending += decoder.decode(value, { stream: true });
            let end;
            while ((end = pending.indexOf("\n")) >= 0 && this._receiving()) {
              const line = pending.slice(0, end);
              pending = pending.slice(end + 1);
              this._line(line);
            }
          }
          ended = true; // the response ended (its byte budget); a partial line is dropped
        } catch (_) {
          // the network failed, or we aborted
        }
        if (this.transport !== "streaming") return; // moved to polling
        if (!ended && !(await this._retry(++failures))) return this._receiving() && this._fail(1006);
      }
    }

    _listen() {
      const Source = this._EventSource;
      // A fixed URL: the browser's own reconnects resume from Last-Event-ID.
      const source = new Source(this._url({ fd_session: this._session, fd_ack: String(this._seen) }));
      this._source = source;
      // A response that died unnoticed: listen again, from what we have.
      const silent = () => {
        source.close();
        if (!this._done && this._source === source) this._listen();
      };
      this._alive(silent);
      let errors = 0;
      source.onmessage = (event) => {
        errors = 0;
        this._alive(silent);
        this._opened();
        this._line(event.data);
      };
      source.addEventListener("heartbeat", () => {
        errors = 0;
        this._alive(silent);
        this._opened();
      });
      source.onerror = () => {
        if (this._done || this._source !== source) return;
        // CLOSED: refused (410 after a restart, a proxy error); CONNECTING: retrying by itself.
        if (source.readyState === 2 || ++errors > 3) {
          source.close();
          this._fail(1006);
        }
      };
    }

    /** (Re)start the wait for the next byte of a long response: silence for 2.5
     * heartbeats (and a second) means the connection died without telling us. */
    _alive(onSilent) {
      this._calm();
      this._watchdog = this._later(() => {
        this._watchdog = null;
        onSilent();
      }, (this._info.heartbeat * 2.5 + 1) * 1000);
    }

    async _poll() {
      let failures = 0;
      const wait = (this._info.poll_timeout + 15) * 1000;
      while (this._receiving()) {
        let body = null;
        try {
          const ack = this._seen;
          const params = { fd_session: this._session, fd_ack: String(ack) };
          // Until the server has seen it once: the session moves to polling.
          if (this._switching) params.fd_transport = "polling";
          const response = await this._request(this._url(params), { method: "GET" }, wait);
          if (!response.ok) return this._receiving() && this._status(response.status);
          this._switching = false;
          body = await response.text();
          this._acknowledged(ack);
        } catch (_) {
          // below
        }
        if (body === null) {
          if (!(await this._retry(++failures))) return this._receiving() && this._fail(1006);
          continue;
        }
        failures = 0;
        for (const line of body.split("\n")) {
          if (!this._receiving()) return;
          this._line(line);
        }
      }
    }

    /** One received record. */
    _line(line) {
      if (!line) return;
      let record;
      try {
        record = JSON.parse(line);
      } catch (_) {
        return; // not a whole record
      }
      if (!record || typeof record.seq !== "number" || record.seq <= this._seen) return; // heartbeat or repeat
      this._seen = record.seq;
      this._unacked += line.length;
      if (typeof record.text === "string") {
        if (this.onmessage) this.onmessage({ data: record.text });
      } else if (typeof record.binary === "string") {
        if (this.onmessage) this.onmessage({ data: fromBase64(record.binary) });
      } else if ("close" in record) {
        this._peerClosed(typeof record.close === "number" ? record.close : 1005, record.reason || "");
        return;
      }
      this._scheduleAck();
    }

    /** A request carrying `ack` was answered: the server has freed records up to it. */
    _acknowledged(ack) {
      if (ack <= this._acked) return;
      this._acked = ack;
      if (ack === this._seen) this._unacked = 0;
    }

    /** Streaming and SSE acknowledge with an empty POST about once a second while
     * records arrive (at once above half the server's buffer): polling's GETs do it. */
    _scheduleAck() {
      if (this.transport === "polling") return;
      if (this._unacked > this._info.max_buffer / 2) return this._pump(true);
      if (this._ackTimer === null) {
        this._ackTimer = this._later(() => {
          this._ackTimer = null;
          this._pump(true);
        }, 1000);
      }
    }

    // ---------------------------------------------------------------- sending

    _queue(data) {
      if (typeof data === "string") return this._enqueue({ text: data });
      if (isBlob(data)) {
        // Numbered now so that order holds; posted once its bytes are read.
        const entry = this._enqueue(null);
        data.arrayBuffer().then((buffer) => {
          this._fill(entry, { binary: toBase64(buffer) });
        });
        return;
      }
      const view = ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : data;
      this._enqueue({ binary: toBase64(view) });
    }

    _enqueue(record) {
      const entry = { seq: ++this._sent, line: null };
      this._outbox.push(entry);
      if (record) this._fill(entry, record);
      return entry;
    }

    _fill(entry, record) {
      entry.line = JSON.stringify(Object.assign({ seq: entry.seq }, record));
      this._outboxBytes += entry.line.length;
      this._pump(false);
    }

    /** Post what is queued (at most one POST in flight; `ackOnly` posts even when nothing is). */
    async _pump(ackOnly) {
      if (this._posting || this._session === null || this.readyState === CLOSED) {
        if (ackOnly) this._ackWanted = true;
        return;
      }
      let count = 0;
      let size = 0;
      while (count < this._outbox.length && this._outbox[count].line !== null) {
        const next = this._outbox[count].line.length + 1;
        if (count && size + next > this._info.max_post) break;
        size += next;
        count++;
      }
      if (!count && !ackOnly && !this._ackWanted) return;
      this._ackWanted = false;
      const lines = this._outbox.slice(0, count).map((entry) => entry.line);
      const body = lines.length ? lines.join("\n") + "\n" : "";
      const ack = this._seen;
      this._posting = true;
      let status = 0;
      try {
        const response = await this._request(
          this._url({ fd_session: this._session, fd_ack: String(ack) }),
          { method: "POST", body: body, headers: { "Content-Type": "text/plain;charset=UTF-8" } },
          30000
        );
        status = response.status;
      } catch (_) {
        status = 0;
      }
      this._posting = false;
      if (this._done) return;
      if (status >= 200 && status < 300) {
        this._postFailures = 0;
        this._outbox.splice(0, count);
        for (const line of lines) this._outboxBytes -= line.length;
        this._acknowledged(ack);
        this._pump(false);
        return;
      }
      if (status && status !== 502 && status !== 504) return this._status(status);
      // Lost on the way: the same records again (the server skips what it took).
      if (++this._postFailures > 5) return this._fail(1006);
      this._later(() => this._pump(count === 0), 250 * this._postFailures);
    }

    // ------------------------------------------------------------------- end

    _peerClosed(code, reason) {
      // Tell the server we have its close record: the session is over for it too.
      this._done = true;
      this._stopReceiving();
      this._posting = false;
      const url = this._url({ fd_session: this._session, fd_ack: String(this._seen) });
      this._fetch(url, { method: "POST", body: "", cache: "no-store", credentials: "same-origin" }).catch(() => {});
      this._finish(this._closeCode !== null ? this._closeCode : code, reason, true);
    }

    /** Leave a session that will not be used: tell the server if it exists, best effort. */
    _abandon() {
      this._done = true;
      this._stopReceiving();
      if (this._session !== null) {
        const line = JSON.stringify({ seq: this._sent + 1, close: 1001, reason: "transport not used" });
        const url = this._url({ fd_session: this._session, fd_ack: String(this._seen) });
        this._fetch(url, { method: "POST", body: line + "\n", cache: "no-store", credentials: "same-origin" }).catch(() => {});
      }
    }

    _stopReceiving() {
      this._calm();
      if (this._abort) this._abort.abort();
      this._abort = null;
      if (this._source) this._source.close();
      this._source = null;
    }

    _fail(code) {
      if (this.readyState === CLOSED) return;
      if (this.onerror && code === 1006) this.onerror({ type: "error" });
      this._finish(code, "", false);
    }

    _finish(code, reason, wasClean) {
      if (this.readyState === CLOSED) return;
      this.readyState = CLOSED;
      this._done = true;
      this._stopReceiving();
      for (const timer of this._timers) clearTimeout(timer);
      this._timers.clear();
      if (this.onclose) this.onclose({ type: "close", code: code, reason: reason, wasClean: wasClean });
    }
  }

  // --------------------------------------------------------------------- socket

  /**
   * A WebSocket that reconnects, queues while not open, and speaks the rooms protocol.
   *
   * Events: `open` (every time a connection opens), `message`, `error`, `close` (once,
   * when the socket is closed for good), `reconnecting` (detail: attempt, delay, code,
   * reason, wasClean), `reconnect` (detail: attempt), `broadcast` (detail: data; a hub
   * message to every member, room null), `roomerror` (detail: reason, room; a rooms
   * error for no room this socket is in), `transport` (detail: transport, previous,
   * upgrade: the connection opened on another transport than the last one, or moved
   * to WebSocket from an HTTP fallback without a reconnect).
   */
  class FullDuplexSocket extends EventTarget {
    /** @type {string} */ #url;
    /** @type {string|string[]|undefined} */ #protocols;
    #options;
    /** @type {WebSocket|null} */ #ws = null;
    #state = CONNECTING;
    #binaryType = "blob";
    #protocol = "";
    #extensions = "";
    #closeRequested = false;
    #attempt = 0;
    #timer = null;
    #queue = [];
    #queuedBytes = 0;
    /** @type {Map<string, Room>} */ #rooms = new Map();
    #roomsUsed = false;
    #origin = "";
    /** @type {string[]} transports still to try for the connection being made */ #plan = [];
    #transport = "";
    #lastTransport = "";
    #usedFallback = false;
    #openTimer = null;
    #probeTimer = null;
    /** @type {WebSocket|null} */ #probeSocket = null;
    #probeDelay = 0;

    /**
     * @param {string|URL} url ws:, wss:, http(s): (converted) or relative to the page
     * @param {string|string[]|FullDuplexOptions} [protocols] subprotocols, or the options
     * @param {FullDuplexOptions} [options]
     */
    constructor(url, protocols, options) {
      super();
      if (options === undefined && protocols && typeof protocols === "object" && !Array.isArray(protocols)) {
        options = protocols;
        protocols = undefined;
      }
      this.#options = checkOptions(options);
      this.#url = resolveURL(url);
      this.#origin = new URL(this.#url).origin;
      this.#protocols = protocols;
      this.#probeDelay = this.#options.probeDelay;
      this.#connect(); // throws what the implementation throws (bad subprotocols…), as the standard
    }

    /** @type {string} */
    get url() {
      return this.#url;
    }

    /** CONNECTING also while waiting to reconnect; CLOSED only once closed for good.
     * @type {0|1|2|3} */
    get readyState() {
      return this.#state;
    }

    /** Bytes the connection has not sent yet plus the bytes in the send queue. @type {number} */
    get bufferedAmount() {
      return (this.#ws ? this.#ws.bufferedAmount || 0 : 0) + this.#queuedBytes;
    }

    /** @type {"blob"|"arraybuffer"} */
    get binaryType() {
      return this.#binaryType;
    }

    set binaryType(value) {
      if (value !== "blob" && value !== "arraybuffer") return; // ignored, as the standard does
      this.#binaryType = value;
      if (this.#ws) this.#ws.binaryType = value;
    }

    /** The subprotocol the server chose on the last connection ("" before). @type {string} */
    get protocol() {
      return this.#protocol;
    }

    /** The extensions the server chose on the last connection. @type {string} */
    get extensions() {
      return this.#extensions;
    }

    /** What carries the connection: "websocket", "streaming", "sse" or "polling" (the
     * one being tried while connecting). @type {string} */
    get transport() {
      return this.#transport;
    }

    /** The rooms joined (and not left), by name. @type {Map<string, Room>} */
    get rooms() {
      return new Map(this.#rooms);
    }

    /**
     * Send now if open; otherwise queue (up to `maxQueue` messages) and send, in order,
     * as soon as a connection opens. After close() data is discarded, as the standard does.
     * @param {string|ArrayBuffer|ArrayBufferView|Blob} data
     */
    send(data) {
      if (this.#state === CLOSING || this.#state === CLOSED) return;
      if (!isBinary(data)) data = String(data);
      if (this.#isOpen()) {
        this.#ws.send(data);
        return;
      }
      const { maxQueue, queueOverflow } = this.#options;
      if (this.#queue.length >= maxQueue) {
        if (maxQueue === 0) throw domError("Still in CONNECTING state.", "InvalidStateError");
        if (queueOverflow === "throw") {
          throw domError(`The send queue is full (maxQueue = ${maxQueue}).`, "QuotaExceededError");
        }
        this.#queuedBytes -= byteSize(this.#queue.shift());
      }
      this.#queue.push(data);
      this.#queuedBytes += byteSize(data);
    }

    /**
     * Close for good: no more reconnects; queued messages are dropped.
     * @param {number} [code] 1000 or 3000–4999 (else InvalidAccessError)
     * @param {string} [reason] at most 123 UTF-8 bytes (else SyntaxError)
     */
    close(code, reason) {
      // WebSockets standard, close(): validate before anything changes.
      if (code !== undefined) {
        code = clampUnsignedShort(code);
        if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
          throw domError(`The close code must be either 1000, or between 3000 and 4999. ${code} is neither.`, "InvalidAccessError");
        }
      }
      if (reason !== undefined) {
        reason = String(reason);
        if (utf8Length(reason) > 123) {
          throw domError("The close reason must not be greater than 123 UTF-8 bytes.", "SyntaxError");
        }
        if (code === undefined && reason) code = 1000;
      }
      if (this.#state === CLOSING || this.#state === CLOSED) return;
      this.#closeRequested = true;
      this.#state = CLOSING;
      this.#stopProbe();
      this.#queue = [];
      this.#queuedBytes = 0;
      if (this.#timer !== null) {
        clearTimeout(this.#timer);
        this.#timer = null;
      }
      const ws = this.#ws;
      if (ws) {
        if (code === undefined) ws.close();
        else ws.close(code, reason);
      } else {
        // Between attempts: like close() on a CONNECTING WebSocket, a 1006 close event.
        setTimeout(() => this.#finish(1006, "", false), 0);
      }
    }

    /**
     * Join `name`, or return the Room already joined. The join is sent now if open and
     * again, with `since`, after every reconnect.
     * @param {string} name
     * @param {{since?: number, epoch?: string}} [options] resume after this offset (e.g. one
     *   kept in localStorage with room.lastOffset), in this room epoch (room.epoch)
     * @returns {Room}
     */
    join(name, options) {
      if (typeof name !== "string" || !name) throw new TypeError("a room name is a non-empty string");
      const existing = this.#rooms.get(name);
      if (existing) return existing;
      if (this.#state === CLOSING || this.#state === CLOSED) throw domError("The socket is closed.", "InvalidStateError");
      const since = options && options.since;
      if (since !== undefined && since !== null && !(Number.isInteger(since) && since >= 0)) {
        throw new TypeError("since must be a non-negative integer");
      }
      const epoch = options && options.epoch;
      if (epoch !== undefined && epoch !== null && typeof epoch !== "string") throw new TypeError("epoch must be a string");
      const room = new Room(TOKEN, this, name, since === undefined ? null : since, epoch || null);
      this.#rooms.set(name, room);
      this.#roomsUsed = true;
      if (this.#isOpen()) this.#ws.send(room[JOIN_FRAME]());
      return room;
    }

    /** Called by Room.leave(). */
    [FORGET](room, sendLeave) {
      if (this.#rooms.get(room.name) !== room) return;
      this.#rooms.delete(room.name);
      if (sendLeave && this.#isOpen()) this.#ws.send(JSON.stringify({ op: "leave", room: room.name }));
    }

    // ------------------------------------------------------------- connection

    #isOpen() {
      return this.#state === OPEN && this.#ws !== null && this.#ws.readyState === OPEN;
    }

    /** The transports this socket may try, in order, that the platform can run. */
    #usable() {
      return this.#options.transports.filter((name) => supported(name, this.#options));
    }

    /** The transports to try for the next connection: all of them in order, or from
     * the one this tab settled on (WebSocket is then probed in the background). */
    #newPlan() {
      const usable = this.#usable();
      if (!usable.length) throw new TypeError("no usable transport: pass options.WebSocket or options.fetch");
      const storage = this.#options.remember ? tabStorage() : null;
      let start = 0;
      try {
        start = Math.max(0, usable.indexOf(storage && storage.getItem(MEMORY_KEY + this.#url)));
      } catch (_) {
        start = 0;
      }
      return usable.slice(start);
    }

    #remember(name) {
      const storage = this.#options.remember ? tabStorage() : null;
      try {
        if (storage) storage.setItem(MEMORY_KEY + this.#url, name);
      } catch (_) {
        // storage full or refused: the choice is only for this page then
      }
    }

    #forget() {
      const storage = this.#options.remember ? tabStorage() : null;
      try {
        if (storage) storage.removeItem(MEMORY_KEY + this.#url);
      } catch (_) {
        // nothing kept then
      }
    }

    #connect() {
      this.#timer = null;
      this.#plan = this.#newPlan();
      this.#tryNext();
    }

    /** Start the next transport of the plan. */
    #tryNext() {
      const name = this.#plan.shift();
      this.#usedFallback = this.#usedFallback || name !== this.#options.transports[0];
      const conn = name === "websocket" ? this.#newWebSocket() : new HTTPTransport(this.#url, this.#protocolList(), name, this.#options);
      conn.binaryType = this.#binaryType;
      conn.onopen = () => conn === this.#ws && this.#onOpen();
      conn.onmessage = (event) => conn === this.#ws && this.#onMessage(event.data);
      conn.onerror = () => conn === this.#ws && (this.#state === OPEN || !this.#plan.length) && this.dispatchEvent(new Event("error"));
      conn.onclose = (event) => conn === this.#ws && this.#attemptClosed(conn, event);
      this.#ws = conn;
      this.#transport = name;
      if (name === "websocket" && this.#plan.length) {
        // A proxy that swallows the upgrade may leave it hanging: do not wait for it.
        this.#openTimer = setTimeout(() => {
          this.#openTimer = null;
          if (this.#ws !== conn || conn.readyState !== CONNECTING) return;
          this.#ws = null;
          detach(conn);
          conn.close();
          this.#attemptClosed(conn, { code: 1006, reason: "", wasClean: false });
        }, this.#options.openTimeout);
      }
    }

    #newWebSocket() {
      const Impl = this.#options.WebSocket || root.WebSocket;
      if (typeof Impl !== "function") throw new TypeError("no WebSocket implementation: pass options.WebSocket");
      return this.#protocols === undefined ? new Impl(this.#url) : new Impl(this.#url, this.#protocols);
    }

    #protocolList() {
      if (this.#protocols === undefined) return [];
      return Array.isArray(this.#protocols) ? this.#protocols.map(String) : [String(this.#protocols)];
    }

    /** A connection attempt ended: before it opened, the next transport of the plan
     * gets its turn (a failed WebSocket, a 404 or a buffering proxy); after, reconnect. */
    #attemptClosed(conn, event) {
      const opened = this.#state === OPEN;
      this.#ws = null;
      this.#clearOpenTimer();
      if (!opened && !this.#closeRequested && this.#plan.length && (event.code === 1006 || event.code === 1015)) {
        // A buffering proxy holds SSE as it holds streaming: go on with polling.
        if (conn.buffered) this.#plan = this.#plan.filter((name) => name === "polling");
        if (this.#plan.length) {
          try {
            this.#tryNext();
            return;
          } catch (_) {
            // fall through to the ordinary reconnect
          }
        }
      }
      // Nothing opened: the next round starts from the first transport again.
      if (!opened && !this.#plan.length) this.#forget();
      this.#onClose(event.code, event.reason, event.wasClean);
    }

    #clearOpenTimer() {
      if (this.#openTimer !== null) {
        clearTimeout(this.#openTimer);
        this.#openTimer = null;
      }
    }

    // ------------------------------------------------- background WebSocket probe

    #scheduleProbe() {
      if (this.#probeTimer !== null || this.#transport === "websocket") return;
      if (this.#options.transports.indexOf("websocket") < 0 || !supported("websocket", this.#options)) return;
      const delay = this.#probeDelay;
      this.#probeDelay = Math.min(MAX_PROBE_DELAY, Math.max(1, delay) * 2);
      this.#probeTimer = setTimeout(() => this.#probe(), delay);
    }

    #stopProbe() {
      if (this.#probeTimer !== null) clearTimeout(this.#probeTimer);
      this.#probeTimer = null;
      const probe = this.#probeSocket;
      this.#probeSocket = null;
      if (probe) {
        detach(probe);
        try {
          probe.close();
        } catch (_) {
          // already closing
        }
      }
    }

    /** Try WebSocket beside the HTTP transport; if it opens in time, move over. */
    #probe() {
      this.#probeTimer = null;
      if (this.#state !== OPEN || this.#transport === "websocket") return;
      let ws;
      try {
        ws = this.#newWebSocket();
      } catch (_) {
        return;
      }
      this.#probeSocket = ws;
      ws.binaryType = this.#binaryType;
      const failed = () => {
        clearTimeout(timer);
        if (this.#probeSocket !== ws) return;
        this.#stopProbe();
        if (this.#state === OPEN) this.#scheduleProbe();
      };
      const timer = setTimeout(failed, this.#options.openTimeout);
      ws.onerror = null;
      ws.onclose = failed;
      ws.onopen = () => {
        clearTimeout(timer);
        if (this.#probeSocket !== ws) return;
        this.#probeSocket = null;
        this.#upgrade(ws);
      };
    }

    /**
     * Make the opened WebSocket `ws` the connection. The HTTP session is closed behind
     * it: what it still carries either way arrives before its close record, and sends
     * go on the WebSocket from now on. Rooms re-join on `ws` from their last offset, so
     * each offset still comes once.
     */
    #upgrade(ws) {
      const old = this.#ws;
      if (this.#state !== OPEN || !old || old.readyState !== OPEN) {
        detach(ws);
        ws.close();
        return;
      }
      const previous = this.#transport;
      detach(old);
      old.onmessage = (event) => old.readyState !== CLOSED && this.#onMessage(event.data);
      // Messages the WebSocket brings wait until the HTTP session has delivered all it
      // carries (up to its close record, at most its 5 s close timeout): order holds.
      let held = [];
      ws.onmessage = (event) => ws === this.#ws && this.#onMessage(event.data, held);
      old.onclose = () => {
        const waiting = held || [];
        held = null;
        for (const event of waiting) if (ws === this.#ws) this.dispatchEvent(event);
      };
      ws.onerror = () => ws === this.#ws && this.dispatchEvent(new Event("error"));
      ws.onclose = (event) => ws === this.#ws && this.#attemptClosed(ws, event);
      this.#ws = ws;
      this.#transport = "websocket";
      this.#probeDelay = this.#options.probeDelay;
      this.#protocol = ws.protocol || "";
      this.#extensions = ws.extensions || "";
      for (const room of this.#rooms.values()) ws.send(room[JOIN_FRAME]());
      old.close(1000, "upgraded to websocket");
      this.#remember("websocket");
      this.dispatchEvent(custom("transport", { transport: "websocket", previous: previous, upgrade: true }));
    }

    #onOpen() {
      if (this.#closeRequested) return;
      const ws = this.#ws;
      const attempt = this.#attempt;
      this.#state = OPEN;
      this.#attempt = 0;
      this.#clearOpenTimer();
      this.#protocol = ws.protocol || "";
      this.#extensions = ws.extensions || "";
      // A streaming or SSE session held back by a proxy opens as polling.
      if (ws instanceof HTTPTransport) this.#transport = ws.transport;
      if (this.#usedFallback || ws.buffered) this.#remember(this.#transport);
      this.#usedFallback = false;
      // Joins first, so that queued publishes find their rooms joined on the server.
      for (const room of this.#rooms.values()) ws.send(room[JOIN_FRAME]());
      const queue = this.#queue;
      this.#queue = [];
      this.#queuedBytes = 0;
      for (const data of queue) ws.send(data);
      if (this.#transport !== this.#lastTransport) {
        const previous = this.#lastTransport;
        this.#lastTransport = this.#transport;
        this.dispatchEvent(custom("transport", { transport: this.#transport, previous: previous || null, upgrade: false }));
      }
      if (this.#ws !== ws || this.#state !== OPEN) return;
      this.dispatchEvent(new Event("open"));
      if (attempt > 0 && this.#ws === ws && this.#state === OPEN) {
        this.dispatchEvent(custom("reconnect", { attempt: attempt }));
      }
      if (this.#ws === ws && this.#state === OPEN) this.#scheduleProbe();
    }

    /** A received message; with `held` (an array), a message event is kept there for
     * later instead of dispatched (rooms frames are routed at once: offsets order them). */
    #onMessage(data, held) {
      if (typeof data === "string") {
        if (this.#roomsUsed && /^\s*\{\s*"op"\s*:/.test(data) && this.#roomFrame(data)) {
          if (!this.#options.roomFramesAsMessages) return;
        }
      } else {
        data = this.#binary(data);
      }
      const event = makeEvent(root.MessageEvent, "message", { data: data, origin: this.#origin });
      if (held) held.push(event);
      else this.dispatchEvent(event);
    }

    /** Received binary data as `binaryType` asks, whatever the implementation gave. */
    #binary(data) {
      if (isBlob(data)) return data; // cannot become an ArrayBuffer synchronously
      let buffer = data;
      if (ArrayBuffer.isView(data)) buffer = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
      if (!(buffer instanceof ArrayBuffer)) return data;
      return this.#binaryType === "blob" && typeof Blob === "function" ? new Blob([buffer]) : buffer;
    }

    /** Route a rooms-protocol frame; false if `text` is not one. */
    #roomFrame(text) {
      let frame;
      try {
        frame = JSON.parse(text);
      } catch (_) {
        return false;
      }
      if (!frame || typeof frame !== "object") return false;
      const room = typeof frame.room === "string" ? this.#rooms.get(frame.room) : undefined;
      switch (frame.op) {
        case "message":
          if (frame.room === null) {
            this.dispatchEvent(custom("broadcast", { data: frame.data }));
            return true;
          }
        // falls through
        case "joined":
        case "presence":
        case "published":
        case "left":
          if (room) room[RECEIVE](frame); // frames of rooms we left are dropped
          return true;
        case "error":
          if (room) room[RECEIVE](frame);
          else this.dispatchEvent(custom("roomerror", Object.assign(errorDetail(frame), { room: frame.room === undefined ? null : frame.room })));
          return true;
        default:
          return false;
      }
    }

    #onClose(code, reason, wasClean) {
      this.#ws = null;
      this.#stopProbe();
      for (const room of this.#rooms.values()) room[DISCONNECTED]();
      const o = this.#options;
      const closed = { code: code, reason: reason, wasClean: wasClean };
      if (!this.#closeRequested && o.reconnect && this.#attempt < o.maxRetries && o.shouldReconnect(closed)) {
        this.#state = CONNECTING;
        const attempt = ++this.#attempt;
        const delay = this.#delay(attempt);
        const refresh = code === AUTH_EXPIRED ? o.refreshAuth : null;
        this.#timer = setTimeout(() => (refresh ? this.#refreshThenRetry(refresh, closed) : this.#retry()), delay);
        this.dispatchEvent(custom("reconnecting", { attempt: attempt, delay: delay, code: code, reason: reason, wasClean: wasClean }));
        return;
      }
      this.#finish(code, reason, wasClean);
    }

    /** Exponential backoff with full jitter: uniform in [0, min(maxDelay, minDelay·factor^(attempt-1))). */
    #delay(attempt) {
      const o = this.#options;
      const cap = Math.min(o.maxDelay, o.minDelay * Math.pow(o.factor, attempt - 1));
      return Math.floor(o.random() * cap);
    }

    /** The credential expired: get a new one from the application, then reconnect. */
    #refreshThenRetry(refresh, closed) {
      this.#timer = null;
      let result;
      try {
        result = Promise.resolve(refresh({ code: closed.code, reason: closed.reason }));
      } catch (error) {
        result = Promise.reject(error);
      }
      result.then(
        (protocols) => {
          if (this.#closeRequested || this.#state === CLOSED) return;
          if (protocols !== undefined && protocols !== null) this.#protocols = protocols;
          this.#retry();
        },
        () => {
          if (this.#closeRequested || this.#state === CLOSED) return;
          this.dispatchEvent(new Event("error"));
          this.#finish(closed.code, closed.reason, closed.wasClean);
        },
      );
    }

    #retry() {
      try {
        this.#connect();
      } catch (_) {
        this.dispatchEvent(new Event("error"));
        this.#onClose(1006, "", false);
      }
    }

    #finish(code, reason, wasClean) {
      if (this.#state === CLOSED) return;
      this.#state = CLOSED;
      this.#queue = [];
      this.#queuedBytes = 0;
      this.dispatchEvent(makeEvent(root.CloseEvent, "close", { code: code, reason: reason, wasClean: wasClean }));
    }
  }

  /** Error codes of the rooms protocol after which the same request may succeed. */
  const RETRYABLE_CODES = new Set(["hub_unavailable", "unknown_outcome", "rate_limited"]);

  function isRetryable(frame) {
    return typeof frame.retryable === "boolean" ? frame.retryable : RETRYABLE_CODES.has(frame.code);
  }

  /** Whether an error frame refuses a join for good (decided on its code, never its text). */
  function refusesJoin(frame) {
    return (frame.request === undefined || frame.request === "join") && !isRetryable(frame);
  }

  /** The `detail` of an error event: the reason text, its machine-readable code and whether retrying can help. */
  function errorDetail(frame) {
    const detail = { reason: frame.reason, code: typeof frame.code === "string" ? frame.code : null, retryable: isRetryable(frame) };
    if (frame.id !== undefined) detail.id = frame.id;
    return detail;
  }

  /** WebIDL [Clamp] unsigned short: round half to even, clamp to 0…65535. */
  function clampUnsignedShort(value) {
    let n = Number(value);
    if (Number.isNaN(n)) return 0;
    n = Math.min(Math.max(n, 0), 65535);
    const floor = Math.floor(n);
    const diff = n - floor;
    if (diff > 0.5 || (diff === 0.5 && floor % 2 === 1)) return floor + 1;
    return floor;
  }

  defineStates(FullDuplexSocket);
  defineStates(FullDuplexSocket.prototype);
  defineHandlers(FullDuplexSocket, ["open", "message", "error", "close", "reconnecting", "reconnect"]);

  // ----------------------------------------------------------------------- room

  /**
   * A room joined with socket.join(name).
   *
   * Events (CustomEvent, fields in `detail`): `joined` (members, offset, epoch, gap,
   * reset, resumed) after each join or re-join; `message` (data, offset, history) once
   * per offset, in order; `presence` (event "join"|"leave", user, members); `gap` (from,
   * to: offsets the server could not replay); `published` (id, offset: a publish
   * with an id was stored, or had been); `error` (reason, code, retryable, id).
   *
   * Offsets count within a room *epoch* (a random id the server gives each life of a
   * room): re-joins send the last offset with its epoch, and a new epoch (the server
   * lost the room and started it again) resets the once-per-offset bookkeeping.
   */
  class Room extends EventTarget {
    #socket;
    #name;
    /** @type {string[]} */ #members = [];
    /** @type {number|null} */ #lastOffset;
    /** @type {string|null} */ #epoch;
    #state = "joining"; // joining | joined | left

    /** @private use socket.join(name) */
    constructor(token, socket, name, since, epoch) {
      super();
      if (token !== TOKEN) throw new TypeError("Illegal constructor: use socket.join(name)");
      this.#socket = socket;
      this.#name = name;
      this.#lastOffset = since;
      this.#epoch = epoch === undefined ? null : epoch;
    }

    /** @type {string} */
    get name() {
      return this.#name;
    }

    /** Users online in the room: the list in `joined`, kept up to date by presence changes. @type {string[]} */
    get members() {
      return this.#members.slice();
    }

    /** The offset of the last message delivered (null: none yet). @type {number|null} */
    get lastOffset() {
      return this.#lastOffset;
    }

    /** The room epoch `lastOffset` belongs to (null: not known yet). @type {string|null} */
    get epoch() {
      return this.#epoch;
    }

    /** True between the server's `joined` and the next disconnect or leave(). @type {boolean} */
    get joined() {
      return this.#state === "joined";
    }

    /**
     * Publish `data`, any JSON value but null, to the room (queued like send() while
     * not open). RoomHandler echoes it back (echo_publish) as a `message` with its offset.
     * With `options.id` (a string of 1 to 64 characters) the server acknowledges it with
     * a `published` event and drops a later publish with the same id: after an `error`
     * whose code is `unknown_outcome`, publish again with the same id.
     * @param {*} data
     * @param {{id?: string}} [options]
     */
    publish(data, options) {
      if (this.#state === "left") throw domError(`Not in room '${this.#name}'.`, "InvalidStateError");
      // null is what the server's transform() hook returns to drop a message.
      if (data === undefined || data === null) throw new TypeError("data must be a JSON value other than null");
      const frame = { op: "publish", room: this.#name, data: data };
      const id = options && options.id;
      if (id !== undefined && id !== null) {
        if (typeof id !== "string" || id.length === 0 || id.length > 64) throw new TypeError("id must be a string of 1 to 64 characters");
        frame.id = id;
      }
      this.#socket.send(JSON.stringify(frame));
    }

    /** Leave the room; no more events, no re-join after reconnects. */
    leave() {
      if (this.#state === "left") return;
      this.#state = "left";
      this.#socket[FORGET](this, true);
    }

    [JOIN_FRAME]() {
      this.#state = "joining";
      const frame = { op: "join", room: this.#name };
      if (this.#lastOffset !== null) {
        frame.since = this.#lastOffset;
        if (this.#epoch !== null) frame.epoch = this.#epoch;
      }
      return JSON.stringify(frame);
    }

    [DISCONNECTED]() {
      if (this.#state === "joined") this.#state = "joining";
    }

    [RECEIVE](frame) {
      switch (frame.op) {
        case "joined":
          return this.#joined(frame);
        case "message":
          if (typeof frame.offset === "number") this.#newEpoch(frame.epoch, frame.offset);
          return this.#deliver(frame.offset, frame.data, false);
        case "published":
          return this.dispatchEvent(custom("published", { id: frame.id, offset: frame.offset }));
        case "presence":
          this.#presence(frame);
          return this.dispatchEvent(custom("presence", { event: frame.event, user: frame.user, members: this.members }));
        case "error":
          // A join refused for good (forbidden, bad request…): forget the room rather
          // than retry it forever. Errors answering other requests (a publish refused
          // while the hub is down), and retryable ones, leave the join in place.
          if (this.#state === "joining" && refusesJoin(frame)) {
            this.#state = "left";
            this.#socket[FORGET](this, false);
          }
          return this.dispatchEvent(custom("error", errorDetail(frame)));
      }
    }

    #joined(frame) {
      const offset = typeof frame.offset === "number" ? frame.offset : null;
      const resumed = this.#lastOffset !== null;
      // `reset`: the room restarted (or was evicted) and counts from 0 again; a server
      // without the flag shows it by an offset below ours.
      // A new epoch is a reset too, even if the server did not say so.
      const newEpoch = typeof frame.epoch === "string" && this.#epoch !== null && frame.epoch !== this.#epoch;
      const reset = Boolean(frame.reset) || newEpoch || (resumed && offset !== null && offset < this.#lastOffset);
      if (reset) this.#lastOffset = 0;
      if (typeof frame.epoch === "string") this.#epoch = frame.epoch;
      this.#state = "joined";
      this.#members = Array.isArray(frame.members) ? frame.members.slice() : [];
      const gap = frame.gap || null;
      this.dispatchEvent(custom("joined", { members: this.members, offset: offset, epoch: this.#epoch, gap: gap, reset: reset, resumed: resumed }));
      if (gap) {
        this.dispatchEvent(custom("gap", { from: gap.from, to: gap.to }));
        if (this.#lastOffset === null || gap.to > this.#lastOffset) this.#lastOffset = gap.to;
      }
      for (const entry of frame.history || []) this.#deliver(entry.offset, entry.data, true);
      if (offset !== null && (this.#lastOffset === null || offset > this.#lastOffset)) this.#lastOffset = offset;
    }

    /**
     * Apply a presence change to the member list. The server sends the full list once,
     * in `joined`, then only who joined or left; a frame that carries `members` (older
     * servers) replaces the list.
     */
    #presence(frame) {
      if (Array.isArray(frame.members)) {
        this.#members = frame.members;
        return;
      }
      const user = frame.user;
      if (typeof user !== "string") return;
      const members = this.#members;
      let low = 0;
      let high = members.length;
      while (low < high) {
        const mid = (low + high) >>> 1;
        if (members[mid] < user) low = mid + 1;
        else high = mid;
      }
      const present = members[low] === user;
      if (frame.event === "join" && !present) members.splice(low, 0, user);
      else if (frame.event === "leave" && present) members.splice(low, 1);
    }

    /**
     * A live message from another epoch than ours: the room started a new life, its
     * offsets count from 1 again. Forget the old ones (or nothing new would be
     * delivered) and say which of the new ones we did not get.
     */
    #newEpoch(epoch, offset) {
      if (typeof epoch !== "string" || epoch === this.#epoch) return;
      const known = this.#epoch !== null;
      this.#epoch = epoch;
      if (!known) return;
      this.#lastOffset = 0;
      if (offset > 1) {
        this.dispatchEvent(custom("gap", { from: 1, to: offset - 1 }));
        this.#lastOffset = offset - 1;
      }
    }

    /** Deliver once per offset: history may overlap what was already seen. */
    #deliver(offset, data, fromHistory) {
      if (typeof offset === "number") {
        if (this.#lastOffset !== null && offset <= this.#lastOffset) return;
        this.#lastOffset = offset;
      } // offset null: an ephemeral message, never stored, never deduplicated
      this.dispatchEvent(custom("message", { data: data, offset: offset, history: fromHistory }));
    }
  }

  defineHandlers(Room, ["joined", "message", "presence", "published", "gap", "error"]);

  return { FullDuplexSocket: FullDuplexSocket, Room: Room };
});

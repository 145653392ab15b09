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
    ["minDelay", "maxDelay", "maxRetries", "maxQueue"].forEach(nonNegative);
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

  // --------------------------------------------------------------------- socket

  /**
   * A WebSocket that reconnects, queues while not open, and speaks the rooms protocol.
   *
   * Events: `open` (every time a connection opens), `message`, `error`, `close` (once,
   * when the socket is closed for good), `reconnecting` (detail: attempt, delay, code,
   * reason, wasClean), `reconnect` (detail: attempt), `broadcast` (detail: data; a hub
   * message to every member, room null), `roomerror` (detail: reason, room; a rooms
   * error for no room this socket is in).
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

    #connect() {
      this.#timer = null;
      const Impl = this.#options.WebSocket || root.WebSocket;
      if (typeof Impl !== "function") throw new TypeError("no WebSocket implementation: pass options.WebSocket");
      const ws = this.#protocols === undefined ? new Impl(this.#url) : new Impl(this.#url, this.#protocols);
      ws.binaryType = this.#binaryType;
      ws.onopen = () => ws === this.#ws && this.#onOpen();
      ws.onmessage = (event) => ws === this.#ws && this.#onMessage(event.data);
      ws.onerror = () => ws === this.#ws && this.dispatchEvent(new Event("error"));
      ws.onclose = (event) => ws === this.#ws && this.#onClose(event.code, event.reason, event.wasClean);
      this.#ws = ws;
    }

    #onOpen() {
      if (this.#closeRequested) return;
      const ws = this.#ws;
      const attempt = this.#attempt;
      this.#state = OPEN;
      this.#attempt = 0;
      this.#protocol = ws.protocol || "";
      this.#extensions = ws.extensions || "";
      // Joins first, so that queued publishes find their rooms joined on the server.
      for (const room of this.#rooms.values()) ws.send(room[JOIN_FRAME]());
      const queue = this.#queue;
      this.#queue = [];
      this.#queuedBytes = 0;
      for (const data of queue) ws.send(data);
      this.dispatchEvent(new Event("open"));
      if (attempt > 0 && this.#ws === ws && this.#state === OPEN) {
        this.dispatchEvent(custom("reconnect", { attempt: attempt }));
      }
    }

    #onMessage(data) {
      if (typeof data === "string") {
        if (this.#roomsUsed && /^\s*\{\s*"op"\s*:/.test(data) && this.#roomFrame(data)) {
          if (!this.#options.roomFramesAsMessages) return;
        }
      } else {
        data = this.#binary(data);
      }
      this.dispatchEvent(makeEvent(root.MessageEvent, "message", { data: data, origin: this.#origin }));
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

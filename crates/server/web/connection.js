// The live link to the server: a WebSocket at /v1/ws, or long-polling
// (/v1/poll to receive, /v1/frames to send) where WebSockets cannot connect.
//
// It owns reconnecting with backoff, switching transports, matching replies
// to requests by correlation id and acking what it received: acks are
// cumulative per conversation ("I have every event of conversation 7 up to
// seq 41"), one per conversation after a burst. What the frames mean is the
// store's business: stored events and live frames are handed to `onFrame`,
// which must apply them synchronously so an ack never runs ahead of the state
// it covers.

import { ApiError, isTransient, utf8Bytes, withTimeout } from './api.js';

const BACKOFF_BASE_MS = 500;
const BACKOFF_MAX_MS = 8000;
const REQUEST_TIMEOUT_MS = 15000;
const KEEPALIVE_MS = 25000;
const POLL_WAIT_MS = 25000;
// A poll answers within POLL_WAIT_MS; one that takes this much longer went missing on the way.
const POLL_GRACE_MS = 15000;
// After this many WebSocket attempts in a row that never got to `ready`, try long-polling. Once a WebSocket
// worked on this network, failures more likely mean the server is away (a restart) than a network that breaks
// WebSockets, so the switch waits longer; polling a server that is down would only add failed requests.
const WS_FAILURES_BEFORE_POLL = 2;
const WS_FAILURES_BEFORE_POLL_AFTER_SUCCESS = 6;
// While long-polling in automatic mode, try the WebSocket again after this long (doubling, capped);
// `?probe_ms=` overrides the first delay (tests).
const PROBE_FIRST_MS = 5000;
const PROBE_MAX_MS = 120000;

// One ack per conversation covers a burst: a backlog arrives as many frames, each a few milliseconds apart.
const ACK_DELAY_MS = 30;
// `POST /v1/poll` takes at most this many acks; the rest go with the next poll.
const POLL_ACKS_MAX = 1024;
// How the server refuses an ack for good (a conversation we are not in, a seq it does not have).
const ACK_REFUSALS = new Set(['not_member', 'unknown_conversation', 'invalid_field']);

// Replies to a client frame; everything else that arrives is a stored event or a live frame.
const REPLY_TYPES = new Set(['sent', 'acked', 'read_ok', 'pong', 'group', 'ok', 'error']);

/**
 * The `[conversation, seq]` a frame is acked with: a stored event's seq, or the last seq of an `expired` range
 * (acking it moves past events that will never come). Null for replies, receipts and ephemeral frames, which
 * have nothing to ack.
 */
export function ackPoint(frame) {
  const point = frame.type === 'message' ? [frame.conversation, frame.seq]
    : frame.type === 'expired' ? [frame.conversation, frame.to_seq] : null;
  return point && point.every(Number.isSafeInteger) ? point : null;
}

/** A refused or unanswered request. `transient` says whether retrying the same frame later may succeed. */
export class RequestError extends Error {
  /**
   * @param {object} [options]
   * @param {number} [options.status] the HTTP status, when the frame went over /v1/frames
   * @param {number|null} [options.retryAfterMs] the wait the server asked for (`retry_after_ms`, `Retry-After`)
   */
  constructor(code, message, { status = 0, retryAfterMs = null } = {}) {
    super(message);
    this.name = 'RequestError';
    this.code = code;
    this.status = status;
    this.retryAfterMs = retryAfterMs > 0 ? retryAfterMs : null;
  }

  get transient() {
    return isTransient(this.code, this.status);
  }
}

/** An error frame or error saying the token no longer works. */
function isAuthFailure(error) {
  return error?.code === 'token_invalid' || error?.code === 'not_authenticated';
}

function errorFromFrame(frame) {
  return new RequestError(frame.code, frame.message, { retryAfterMs: frame.retry_after_ms ?? null });
}

/** A server frame, or null for text that is not JSON (never expected; ignored rather than fatal). */
function parseFrame(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

export class Connection {
  /**
   * @param {object} options
   * @param {import('./api.js').Api} options.api
   * @param {'auto'|'ws'|'poll'} options.mode which transports may be used
   * @param {(frame: object) => void} options.onFrame stored events and live frames
   * @param {(status: object) => void} options.onStatus
   * @param {(transport: string) => void} options.onOnline each time a transport is (re)established
   * @param {() => void} options.onRevoked the token no longer works
   * @param {number} [options.probeFirstMs] the first wait before trying the WebSocket again while polling
   */
  constructor({ api, mode, onFrame, onStatus, onOnline, onRevoked, probeFirstMs = PROBE_FIRST_MS }) {
    this.api = api;
    this.mode = mode;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onOnline = onOnline;
    this.onRevoked = onRevoked;

    this.state = 'idle';
    this.transport = null;
    this.retryAt = null;
    this.stopped = false;

    this.ws = null; // the adopted, authenticated socket
    this.attempt = null; // a socket still authenticating (a connect or a probe)
    this.pending = new Map();
    this.nextRequestId = 1;
    this.failures = 0; // consecutive failed connects, for backoff
    this.wsFailures = 0; // consecutive WebSocket connects that never became ready
    this.wsWorked = false; // a WebSocket reached `ready` on the current network
    this.retryTimer = null;
    this.keepaliveTimer = null;

    // Conversation -> highest seq handed to onFrame and not yet acked. It outlives a lost transport: the next
    // one acks it, and if an ack went down with the old one, the server sends those events again (and they are
    // acked again).
    this.unacked = new Map();
    this.ackTimer = null;

    this.pollGeneration = 0;
    this.pollAbort = null;
    this.pollWaitingForProbe = false;
    this.probeTimer = null;
    this.probeFirstMs = probeFirstMs;
    this.probeDelayMs = probeFirstMs;

    this.handleOnline = () => {
      // A new network may treat WebSockets differently from the last one.
      this.wsWorked = false;
      if (this.state === 'offline') this.retryNow();
    };
    window.addEventListener('online', this.handleOnline);
  }

  get online() {
    return this.state === 'online';
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.handleOnline);
    this.teardown('stopped');
    this.setState('stopped');
  }

  /** Skip the backoff wait (the "retry now" button, the browser's online event) or take the device back from another tab. */
  retryNow() {
    if (this.stopped) return;
    if (this.state === 'offline' || this.state === 'replaced') {
      clearTimeout(this.retryTimer);
      this.failures = 0;
      this.connect();
    }
  }

  /**
   * Send a client frame and resolve with its reply frame; reject with a
   * RequestError for an `error` reply or when there is no answer.
   */
  request(frame, { timeoutMs = REQUEST_TIMEOUT_MS } = {}) {
    if (!this.online) return Promise.reject(new RequestError('offline', 'not connected'));
    const id = `r${this.nextRequestId++}`;
    const message = { ...frame, id };
    if (this.transport === 'ws') return this.requestOverSocket(message, timeoutMs);
    return this.requestOverHttp(message);
  }

  /** Record that the events of `conversation` up to `seq` were applied, so they get acked. */
  received(conversation, seq) {
    if (seq > (this.unacked.get(conversation) ?? 0)) this.unacked.set(conversation, seq);
    // Long-polling acks in the next poll's body instead.
    if (this.transport === 'ws' && !this.ackTimer) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        this.sendAcks();
      }, ACK_DELAY_MS);
    }
  }

  // ---- internals -------------------------------------------------------

  setState(state, extra = {}) {
    this.state = state;
    this.retryAt = extra.retryAt ?? null;
    this.onStatus({ state, transport: this.transport, mode: this.mode, retryAt: this.retryAt });
  }

  connect() {
    if (this.stopped) return;
    this.teardown('reconnecting');
    const threshold = this.wsWorked ? WS_FAILURES_BEFORE_POLL_AFTER_SUCCESS : WS_FAILURES_BEFORE_POLL;
    const usePoll = this.mode === 'poll' || (this.mode === 'auto' && this.wsFailures >= threshold);
    this.transport = usePoll ? 'poll' : 'ws';
    this.setState('connecting');
    if (usePoll) this.startPolling();
    else this.openSocket({ probe: false });
  }

  /** Drop every transport and reject what waits for a reply. */
  teardown(reason) {
    clearTimeout(this.retryTimer);
    clearTimeout(this.probeTimer);
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    this.pollGeneration++;
    this.pollAbort?.abort();
    this.pollAbort = null;
    this.pollWaitingForProbe = false;
    for (const socket of [this.ws, this.attempt]) {
      if (socket) {
        socket.onclose = socket.onmessage = socket.onopen = socket.onerror = null;
        try { socket.close(1000, reason); } catch { /* already closed */ }
      }
    }
    this.ws = null;
    this.attempt = null;
    this.failPending('connection_lost', 'the connection was lost');
  }

  failLargest(error) {
    // Sizes are measured only here, on this rare close, not for every frame sent.
    let largest = null;
    for (const [id, waiter] of this.pending) {
      const bytes = utf8Bytes(waiter.data);
      if (!largest || bytes > largest[2]) largest = [id, waiter, bytes];
    }
    if (!largest) return;
    this.pending.delete(largest[0]);
    clearTimeout(largest[1].timer);
    largest[1].reject(error);
  }

  failPending(code, message) {
    for (const { reject, timer } of this.pending.values()) {
      clearTimeout(timer);
      reject(new RequestError(code, message));
    }
    this.pending.clear();
  }

  /** The transport broke: back off and connect again. */
  lost() {
    if (this.stopped) return;
    this.teardown('lost');
    this.failures++;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.max(0, this.failures - 1));
    // Jitter keeps a crowd of clients from reconnecting in lockstep after a restart.
    const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
    this.setState('offline', { retryAt: Date.now() + jittered });
    this.retryTimer = setTimeout(() => this.connect(), jittered);
  }

  becomeOnline(transport) {
    this.transport = transport;
    this.failures = 0;
    this.setState('online');
    if (transport === 'ws') {
      this.wsFailures = 0;
      this.wsWorked = true;
      this.keepaliveTimer = setInterval(() => this.keepalive(), KEEPALIVE_MS);
      // What the last transport received but had no time to ack.
      this.sendAcks();
    }
    this.onOnline(transport);
  }

  revoked() {
    this.stop();
    this.onRevoked();
  }

  // ---- WebSocket ---------------------------------------------------------

  openSocket({ probe }) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}/v1/ws`);
    } catch {
      this.socketFailed(probe);
      return;
    }
    this.attempt = socket;
    socket.onopen = () => {
      socket.send(JSON.stringify({ type: 'auth', id: 'auth', token: this.api.token }));
    };
    socket.onmessage = (event) => {
      const frame = parseFrame(event.data);
      if (!frame) return;
      if (frame.type === 'ready') {
        this.adoptSocket(socket, probe);
      } else if (frame.type === 'error' && isAuthFailure(frame)) {
        socket.onclose = null;
        this.revoked();
      }
    };
    socket.onclose = (event) => {
      if (this.attempt !== socket) return;
      this.attempt = null;
      if (event.code === 4002 || event.code === 4003) {
        this.revoked();
        return;
      }
      this.socketFailed(probe);
    };
  }

  socketFailed(probe) {
    this.wsFailures++;
    if (!probe) {
      this.lost();
      return;
    }
    this.probeDelayMs = Math.min(PROBE_MAX_MS, this.probeDelayMs * 2);
    if (this.pollWaitingForProbe) {
      // The probe's auth ended our poll before the socket itself failed; poll again.
      this.pollWaitingForProbe = false;
      this.startPolling();
    } else {
      this.scheduleProbe();
    }
  }

  adoptSocket(socket, probe) {
    if (probe) {
      // The socket replaced our waiting poll on the server; stop the loop without treating that as a loss.
      this.pollGeneration++;
      this.pollAbort?.abort();
      this.pollAbort = null;
      this.pollWaitingForProbe = false;
      clearTimeout(this.probeTimer);
      this.failPending('connection_lost', 'switched transport');
    }
    this.attempt = null;
    this.ws = socket;
    socket.onmessage = (event) => {
      const frame = parseFrame(event.data);
      if (frame) this.dispatch(frame);
    };
    socket.onclose = (event) => {
      if (this.ws !== socket) return;
      this.ws = null;
      if (event.code === 4003 || event.code === 4002) {
        this.revoked();
      } else if (event.code === 1009) {
        // The server closes on a frame over its size limit, without saying which. Fail the largest request
        // waiting for an answer for good (the outbox drops it instead of resending it forever), then reconnect.
        this.failLargest(new RequestError('frame_too_large', 'the message is too large to send'));
        this.lost();
      } else if (event.code === 4004) {
        // Another tab or window of this browser shares the device and took it over.
        this.teardown('replaced');
        this.setState('replaced');
      } else {
        this.lost();
      }
    };
    this.becomeOnline('ws');
  }

  requestOverSocket(message, timeoutMs) {
    return new Promise((resolve, reject) => {
      const data = JSON.stringify(message);
      const timer = setTimeout(() => {
        this.pending.delete(message.id);
        reject(new RequestError('timeout', 'no answer from the server'));
      }, timeoutMs);
      this.pending.set(message.id, { resolve, reject, timer, data });
      try {
        this.ws.send(data);
      } catch {
        clearTimeout(timer);
        this.pending.delete(message.id);
        reject(new RequestError('connection_lost', 'the connection was lost'));
      }
    });
  }

  /** One ack per conversation, without an id: the server answers only a refusal, which changes nothing. */
  sendAcks() {
    if (this.transport !== 'ws' || !this.ws) return;
    for (const [conversation, seq] of this.unacked) {
      try {
        this.ws.send(JSON.stringify({ type: 'ack', conversation, seq }));
      } catch {
        return; // the socket is going; the next transport acks the rest
      }
      this.unacked.delete(conversation);
    }
  }

  /** The server applied these acks; what arrived since (a higher seq) still waits for its own. */
  forgetAcks(acks) {
    for (const { conversation, seq } of acks) {
      if ((this.unacked.get(conversation) ?? 0) <= seq) this.unacked.delete(conversation);
    }
  }

  async keepalive() {
    const socket = this.ws;
    if (!socket) return;
    try {
      await this.request({ type: 'ping' }, { timeoutMs: 10000 });
    } catch (err) {
      // A half-open TCP connection never fires `close`; give up on it ourselves.
      if (err.code === 'timeout' && this.ws === socket) this.lost();
    }
  }

  // ---- long-polling ----------------------------------------------------------

  async startPolling() {
    const generation = ++this.pollGeneration;
    try {
      // A ping proves the server answers before we call ourselves online; the first poll may wait 25 s.
      await this.api.frames({ type: 'ping', id: 'probe' });
    } catch (err) {
      if (generation !== this.pollGeneration) return;
      if (isAuthFailure(err)) {
        this.revoked();
        return;
      }
      // Neither transport works: the server is down, not just the WebSocket. Start over with the WebSocket.
      this.wsFailures = 0;
      this.lost();
      return;
    }
    if (generation !== this.pollGeneration) return;
    this.becomeOnline('poll');
    if (this.mode === 'auto') {
      this.probeDelayMs = this.probeFirstMs;
      this.scheduleProbe();
    }
    this.pollLoop(generation);
  }

  async pollLoop(generation) {
    while (generation === this.pollGeneration) {
      // Each poll acks what the previous ones brought: the server sends again whatever is not acked.
      const acks = [...this.unacked].slice(0, POLL_ACKS_MAX).map(([conversation, seq]) => ({ conversation, seq }));
      const body = { timeout_ms: POLL_WAIT_MS };
      if (acks.length > 0) body.acks = acks;
      const abort = new AbortController();
      this.pollAbort = abort;
      let response;
      try {
        // Without a deadline a poll lost on the way (a proxy that drops it, a half-open connection) would hang for good.
        response = await this.api.poll(body, withTimeout(abort.signal, POLL_WAIT_MS + POLL_GRACE_MS));
      } catch (err) {
        if (generation !== this.pollGeneration) return;
        if (isAuthFailure(err)) {
          this.revoked();
        } else {
          // A refused ack refuses the whole poll and would again on every retry: drop it, or nothing more arrives.
          if (acks.length > 0 && ACK_REFUSALS.has(err.code)) this.forgetAcks(acks);
          this.lost();
        }
        return;
      }
      if (generation !== this.pollGeneration) return;
      this.forgetAcks(acks);
      for (const frame of response.frames ?? []) this.dispatch(frame);
      if (response.closed === 'replaced') {
        if (this.attempt) {
          // Our own WebSocket probe authenticated; it takes over once its `ready` arrives.
          this.pollWaitingForProbe = true;
        } else {
          this.teardown('replaced');
          this.setState('replaced');
        }
        return;
      }
      if (response.closed === 'revoked') {
        this.revoked();
        return;
      }
      if (response.closed) {
        this.lost();
        return;
      }
    }
  }

  requestOverHttp(message) {
    const generation = this.pollGeneration;
    return this.api.frames(message).then(
      (frames) => {
        let reply = null;
        for (const frame of frames) {
          if (frame.id === message.id && REPLY_TYPES.has(frame.type) && !reply) reply = frame;
          else this.dispatch(frame);
        }
        if (!reply) throw new RequestError('internal', 'no reply');
        if (reply.type === 'error') throw errorFromFrame(reply);
        return reply;
      },
      (err) => {
        if (isAuthFailure(err)) {
          this.revoked();
        } else if (err instanceof ApiError && err.code === 'network' && generation === this.pollGeneration && this.transport === 'poll') {
          this.lost();
        }
        throw new RequestError(err.code ?? 'network', err.message, { status: err.status ?? 0, retryAfterMs: err.retryAfterMs ?? null });
      },
    );
  }

  scheduleProbe() {
    clearTimeout(this.probeTimer);
    this.probeTimer = setTimeout(() => {
      if (this.transport === 'poll' && this.online && !this.attempt) this.openSocket({ probe: true });
    }, this.probeDelayMs);
  }

  // ---- incoming ------------------------------------------------------------

  dispatch(frame) {
    if (frame.id !== undefined && REPLY_TYPES.has(frame.type)) {
      const waiter = this.pending.get(frame.id);
      if (waiter) {
        this.pending.delete(frame.id);
        clearTimeout(waiter.timer);
        if (frame.type === 'error') waiter.reject(errorFromFrame(frame));
        else waiter.resolve(frame);
      }
      return;
    }
    if (REPLY_TYPES.has(frame.type)) return; // an ack's refusal (acks carry no id), `ok`s without id
    this.onFrame(frame);
    // Duplicates too: an event that came again came because its ack did not make it.
    const point = ackPoint(frame);
    if (point) this.received(...point);
  }
}

// REST client for /v1 and the stored session (token) of this browser.
//
// Every call returns parsed JSON or throws an ApiError whose `code` is the
// protocol's stable error code, or `network` when the server could not be
// reached at all, so callers can tell "retry later" from "refused".

const SESSION_KEY = 'missive.session';

// The server refuses larger uploads (limits.media_bytes_max); checking first
// spares the user a long upload that is bound to fail.
export const MEDIA_BYTES_MAX = 16 * 1024 * 1024;
// limits.text_bytes_max: longer texts are refused with `text_too_long`.
export const TEXT_BYTES_MAX = 65536;
// How long a /v1/frames request may take before it counts as lost.
const FRAMES_TIMEOUT_MS = 15000;

const encoder = new TextEncoder();

/** The size of a text as the server counts it: UTF-8 bytes. */
export function utf8Bytes(text) {
  return encoder.encode(text).length;
}

// Nothing reached the server, nothing came back, or the server could not do it right now.
const TRANSIENT_CODES = new Set([
  'network', 'offline', 'connection_lost', 'timeout', 'unavailable', 'shutting_down', 'internal', 'rate_limited',
]);

/**
 * The one retry rule, for REST calls and frames alike: true when the same
 * request may succeed later. Any 5xx, 408 or 429 counts too, with or without
 * a JSON body (a proxy's error page has none).
 */
export function isTransient(code, status = 0) {
  return TRANSIENT_CODES.has(code) || status >= 500 || status === 408 || status === 429;
}

export class ApiError extends Error {
  /**
   * @param {object} [options]
   * @param {number|null} [options.retryAfterMs] how long the server asked us to wait (rate_limited)
   * @param {object|null} [options.errorFrame] the error frame that was the body, for /v1/frames
   */
  constructor(status, code, message, { retryAfterMs = null, errorFrame = null } = {}) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfterMs = retryAfterMs;
    this.errorFrame = errorFrame;
  }

  /** True when nothing reached the server or it could not answer; the same request may be retried. */
  get transient() {
    return isTransient(this.code, this.status);
  }
}

export function loadSession() {
  try {
    const session = JSON.parse(localStorage.getItem(SESSION_KEY) ?? 'null');
    if (session && typeof session.token === 'string' && typeof session.username === 'string') {
      return session;
    }
  } catch {
    // A corrupt entry is treated like no session: the user logs in again.
  }
  return null;
}

export function saveSession(session) {
  localStorage.setItem(SESSION_KEY, JSON.stringify(session));
}

export function clearSession() {
  localStorage.removeItem(SESSION_KEY);
}

async function errorFrom(response) {
  let code = 'http_' + response.status;
  let message = response.statusText || 'request failed';
  let errorFrame = null;
  try {
    const body = await response.json();
    if (body?.error?.code) {
      code = body.error.code;
      message = body.error.message;
    } else if (Array.isArray(body?.frames) && body.frames[0]?.type === 'error') {
      errorFrame = body.frames[0];
      code = errorFrame.code;
      message = errorFrame.message;
    }
  } catch {
    // Not JSON (a proxy's error page, say): keep the HTTP status as the code.
  }
  // The frame's milliseconds are exact; the header is in seconds, rounded up.
  const header = Number(response.headers.get('Retry-After'));
  const retryAfterMs = errorFrame?.retry_after_ms > 0 ? errorFrame.retry_after_ms
    : Number.isFinite(header) && header > 0 ? header * 1000 : null;
  return new ApiError(response.status, code, message, { retryAfterMs, errorFrame });
}

/** `signal`, ending after `timeoutMs` at the latest (a TimeoutError). */
export function withTimeout(signal, timeoutMs) {
  if (!timeoutMs) return signal;
  const timeout = AbortSignal.timeout(timeoutMs);
  return signal ? AbortSignal.any([signal, timeout]) : timeout;
}

// Brands a Chromium-based browser names in navigator.userAgentData, most specific first; the rest (GREASE
// entries such as "Not:A-Brand") say nothing about the browser.
const BRANDS = [
  ['Microsoft Edge', 'Edge'], ['Opera', 'Opera'], ['Google Chrome', 'Chrome'], ['HeadlessChrome', 'HeadlessChrome'],
  ['Chromium', 'Chromium'],
];
// userAgentData.platform values, as people call them.
const PLATFORMS = {
  Windows: 'Windows', macOS: 'macOS', Linux: 'Linux', Android: 'Android', iOS: 'iOS', 'Chrome OS': 'ChromeOS',
  ChromeOS: 'ChromeOS', 'Chromium OS': 'ChromeOS',
};

/** The browser as the user agent string tells it; order matters, as Edge and Opera also say "Chrome" and "Safari". */
function browserFromAgent(agent) {
  if (/Edg(e|A|iOS)?\//.test(agent)) return 'Edge';
  if (/OPR\/|Opera/.test(agent)) return 'Opera';
  if (/Firefox\/|FxiOS\//.test(agent)) return 'Firefox';
  if (/Chromium\//.test(agent)) return 'Chromium';
  if (/Chrome\/|CriOS\//.test(agent)) return 'Chrome';
  if (/Safari\//.test(agent)) return 'Safari';
  return null;
}

/** The system as the user agent string tells it; iOS and Android before macOS and Linux, which they mention too. */
function systemFromAgent(agent) {
  if (/iPhone|iPad|iPod/.test(agent)) return 'iOS';
  if (/Android/.test(agent)) return 'Android';
  if (/CrOS/.test(agent)) return 'ChromeOS';
  if (/Windows/.test(agent)) return 'Windows';
  if (/Macintosh|Mac OS X/.test(agent)) return 'macOS';
  if (/Linux/.test(agent)) return 'Linux';
  return null;
}

/**
 * Name this browser for the device list, "Firefox on Windows", so a person can tell their devices apart:
 * navigator.userAgentData where the browser has it (Chromium-based ones, in secure contexts), else the user
 * agent string; "Browser" when neither says.
 */
export function deviceName(nav = navigator) {
  const data = nav.userAgentData;
  const brands = new Set((data?.brands ?? []).map((entry) => entry.brand));
  const agent = nav.userAgent ?? '';
  const browser = BRANDS.find(([brand]) => brands.has(brand))?.[1] ?? browserFromAgent(agent);
  const system = PLATFORMS[data?.platform] ?? systemFromAgent(agent);
  if (!browser) return system ? `Browser on ${system}` : 'Browser';
  return system ? `${browser} on ${system}` : browser;
}

export class Api {
  /**
   * @param {string|null} token
   * @param {() => void} onUnauthorized called when the token stops working (revoked, logged out elsewhere)
   */
  constructor(token = null, onUnauthorized = () => {}) {
    this.token = token;
    this.onUnauthorized = onUnauthorized;
  }

  async request(method, path, body = undefined, { signal, timeoutMs = 0 } = {}) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: withTimeout(signal, timeoutMs),
        cache: 'no-store',
      });
    } catch (err) {
      if (err?.name === 'AbortError') throw err;
      if (err?.name === 'TimeoutError') throw new ApiError(0, 'timeout', 'no answer from the server');
      throw new ApiError(0, 'network', 'the server cannot be reached');
    }
    if (!response.ok) {
      const error = await errorFrom(response);
      if (error.code === 'token_invalid' && this.token) this.onUnauthorized();
      throw error;
    }
    if (response.status === 204) return null;
    let text;
    try {
      text = await response.text();
    } catch (err) {
      // The body broke off: aborted by us, timed out, or the connection dropped.
      if (err?.name === 'AbortError') throw err;
      if (err?.name === 'TimeoutError') throw new ApiError(0, 'timeout', 'no answer from the server');
      throw new ApiError(0, 'network', 'the connection was lost');
    }
    return text ? JSON.parse(text) : null;
  }

  register(username, password, invite) {
    return this.request('POST', '/v1/accounts', invite ? { username, password, invite } : { username, password });
  }

  registration() {
    return this.request('GET', '/v1/registration');
  }

  login(username, password) {
    return this.request('POST', '/v1/sessions', { username, password, device_name: deviceName() });
  }

  logout() {
    return this.request('DELETE', '/v1/sessions/current');
  }

  devices() {
    return this.request('GET', '/v1/devices');
  }

  renameDevice(deviceId, name) {
    return this.request('PATCH', `/v1/devices/${encodeURIComponent(deviceId)}`, { name });
  }

  revokeDevice(deviceId) {
    return this.request('DELETE', `/v1/devices/${encodeURIComponent(deviceId)}`);
  }

  /**
   * Every conversation of ours, each with its unread count, last message and the others' receipt cursors, most
   * recent activity first (the server sends the list in pages of up to 500).
   */
  async conversations() {
    const all = [];
    let before = null;
    do {
      const page = await this.request('GET', `/v1/conversations?limit=500${before ? `&before=${encodeURIComponent(before)}` : ''}`);
      all.push(...page.conversations);
      before = page.next ?? null;
    } while (before);
    return { conversations: all };
  }

  history(conversation, { before = null, limit = 40 } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before !== null) query.set('before', String(before));
    return this.request('GET', `/v1/conversations/${conversation}/messages?${query}`);
  }

  /** Texts of the conversation containing `query` (any case), newest first, strictly below `before`. */
  searchMessages(conversation, query, { before = null, limit = 20 } = {}) {
    const params = new URLSearchParams({ q: query, limit: String(limit) });
    if (before !== null) params.set('before', String(before));
    return this.request('GET', `/v1/conversations/${conversation}/messages?${params}`);
  }

  createGroup(name, members) {
    return this.request('POST', '/v1/groups', { name, members });
  }

  group(conversation) {
    return this.request('GET', `/v1/groups/${conversation}`);
  }

  addMembers(conversation, members) {
    return this.request('POST', `/v1/groups/${conversation}/members`, { members });
  }

  removeMember(conversation, username) {
    return this.request('DELETE', `/v1/groups/${conversation}/members/${encodeURIComponent(username)}`);
  }

  leaveGroup(conversation) {
    return this.request('POST', `/v1/groups/${conversation}/leave`);
  }

  poll(body, signal) {
    return this.request('POST', '/v1/poll', body, { signal });
  }

  /** One client frame over plain HTTP; resolves with the reply frames, even when the reply is an error frame. */
  async frames(frame) {
    try {
      return (await this.request('POST', '/v1/frames', frame, { timeoutMs: FRAMES_TIMEOUT_MS })).frames;
    } catch (err) {
      const reply = err instanceof ApiError ? err.errorFrame : null;
      if (reply && reply.code !== 'token_invalid' && reply.code !== 'not_authenticated') {
        // The server's error frame is the reply; the caller matches it by id like any other.
        return [{ ...reply, id: frame.id, retry_after_ms: err.retryAfterMs ?? undefined }];
      }
      throw err;
    }
  }

  /** A media object (or its thumbnail) as a Blob; the endpoints need the bearer token, so an <img src> cannot load them. */
  async media(mediaId, { thumbnail = false } = {}) {
    let response;
    try {
      response = await fetch(`/v1/media/${encodeURIComponent(mediaId)}${thumbnail ? '/thumbnail' : ''}`, {
        headers: { Authorization: `Bearer ${this.token}` },
      });
    } catch {
      throw new ApiError(0, 'network', 'the server cannot be reached');
    }
    if (!response.ok) throw await errorFrom(response);
    return response.blob();
  }

  /**
   * Upload a file with progress. XMLHttpRequest rather than fetch because
   * only it reports upload progress.
   * @returns {{promise: Promise<object>, abort: () => void}}
   */
  upload(file, onProgress, { encrypted = false } = {}) {
    const xhr = new XMLHttpRequest();
    const promise = new Promise((resolve, reject) => {
      // An encrypted chat's file is ciphertext, and its name travels inside the encrypted message.
      const url = encrypted ? '/v1/media?encrypted=true'
        : file.name ? `/v1/media?filename=${encodeURIComponent(file.name)}` : '/v1/media';
      xhr.open('POST', url);
      xhr.setRequestHeader('Authorization', `Bearer ${this.token}`);
      xhr.responseType = 'json';
      xhr.upload.addEventListener('progress', (event) => {
        if (event.lengthComputable) onProgress(event.loaded / event.total);
      });
      xhr.addEventListener('load', () => {
        if (xhr.status === 201) {
          resolve(xhr.response);
          return;
        }
        const error = xhr.response?.error;
        reject(new ApiError(xhr.status, error?.code ?? `http_${xhr.status}`, error?.message ?? 'upload failed'));
      });
      xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'the upload was interrupted')));
      xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'the upload was cancelled')));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }
}

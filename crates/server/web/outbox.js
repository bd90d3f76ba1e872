// Frames the user produced that must reach the server exactly once: sends,
// reactions, edits and deletes. They wait here (and in localStorage, so a
// reload or a crash keeps them) until the server answers `sent`; each carries
// its client_msg_id, which makes a resend after a lost answer harmless.

const RETRY_AFTER_TRANSIENT_MS = 3000;

export function newClientMsgId() {
  // Printable ASCII, at most 64 characters, unique per device.
  return `w-${Date.now().toString(36)}-${crypto.randomUUID()}`;
}

export class Outbox {
  /**
   * @param {string} storageKey where the entries persist (per account and device)
   * @param {object} hooks
   * @param {(entry: object, reply: object) => void} hooks.onSent
   * @param {(entry: object, error: Error) => void} hooks.onFailed the server refused it for good
   */
  constructor(storageKey, { onSent, onFailed }) {
    this.storageKey = storageKey;
    this.onSent = onSent;
    this.onFailed = onFailed;
    this.connection = null;
    this.flushing = false;
    this.flushAgain = false;
    this.retryTimer = null;
    this.entries = this.load();
  }

  load() {
    try {
      const entries = JSON.parse(localStorage.getItem(this.storageKey) ?? '[]');
      return Array.isArray(entries) ? entries.filter((entry) => entry?.frame?.client_msg_id) : [];
    } catch {
      return [];
    }
  }

  save() {
    if (this.entries.length === 0) localStorage.removeItem(this.storageKey);
    else localStorage.setItem(this.storageKey, JSON.stringify(this.entries));
  }

  /** @param {object} entry {frame, convKey, ...}; the frame must carry client_msg_id */
  add(entry) {
    this.entries.push(entry);
    this.save();
    this.flush();
  }

  remove(clientMsgId) {
    this.entries = this.entries.filter((entry) => entry.frame.client_msg_id !== clientMsgId);
    this.save();
  }

  /** A draft chat became a real conversation: later frames can name it instead of the user. */
  retarget(username, conversation) {
    for (const entry of this.entries) {
      if (entry.frame.to === username) {
        delete entry.frame.to;
        entry.frame.conversation = conversation;
        entry.convKey = String(conversation);
      }
    }
    this.save();
  }

  clear() {
    this.entries = [];
    localStorage.removeItem(this.storageKey);
  }

  attach(connection) {
    this.connection = connection;
  }

  /** Send what waits, oldest first and one at a time, so the server stores them in the order they were written. */
  async flush() {
    if (this.flushing) {
      this.flushAgain = true;
      return;
    }
    this.flushing = true;
    clearTimeout(this.retryTimer);
    try {
      while (this.entries.length > 0 && this.connection?.online) {
        const entry = this.entries[0];
        let reply;
        try {
          reply = await this.connection.request(entry.frame);
        } catch (err) {
          if (err.transient) {
            // The connection's own reconnect calls flush again; a busy store answers in a moment.
            if (this.connection.online) this.retryTimer = setTimeout(() => this.flush(), RETRY_AFTER_TRANSIENT_MS);
            break;
          }
          this.remove(entry.frame.client_msg_id);
          this.onFailed(entry, err);
          continue;
        }
        this.remove(entry.frame.client_msg_id);
        this.onSent(entry, reply);
      }
    } finally {
      this.flushing = false;
      if (this.flushAgain) {
        this.flushAgain = false;
        this.flush();
      }
    }
  }
}

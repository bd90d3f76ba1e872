// Frames the user produced that must reach the server exactly once: sends,
// reactions, edits and deletes. They wait here (and in localStorage, so a
// reload or a crash keeps them) until the server answers `sent`; each carries
// its client_msg_id, which makes a resend after a lost answer harmless.
//
// Every tab of this browser shares the device and so the stored list. A tab
// never overwrites it with what it has in memory: each write re-reads it and
// merges by client_msg_id, and an entry leaves it only once some tab got the
// server's final answer for it (those ids are kept in a second, short list).

const RETRY_AFTER_TRANSIENT_MS = 3000;
// Answered ids remembered for the other tabs; a tab that still holds one of them in memory drops it.
const ANSWERED_KEEP = 200;

export function newClientMsgId() {
  // Printable ASCII, at most 64 characters, unique per device.
  return `w-${Date.now().toString(36)}-${crypto.randomUUID()}`;
}

function idOf(entry) {
  return entry.frame.client_msg_id;
}

export class Outbox {
  /**
   * @param {string} storageKey where the entries persist (per account and device)
   * @param {object} hooks
   * @param {(entry: object, reply: object) => void} hooks.onSent
   * @param {(entry: object, error: Error) => void} hooks.onFailed the server refused it for good
   * @param {(changes: {added: object[], gone: object[]}) => void} hooks.onSynced another tab added
   *   entries, or got the answer for entries this tab holds
   * @param {(entry: object) => Promise<object>|object} hooks.prepare the frame to write for an entry (a send to an
   *   encrypted conversation is sealed here, just before it goes)
   * @param {(entry: object, error: Error) => boolean} hooks.reconsider a refusal the entry can answer by changing
   *   itself (it did, and goes again) rather than failing
   */
  constructor(storageKey, {
    onSent, onFailed, onSynced = () => {}, prepare = (entry) => entry.frame, reconsider = () => false,
  }) {
    this.storageKey = storageKey;
    this.answeredKey = storageKey.replace(/^missive\.outbox\./, 'missive.outbox-answered.');
    this.onSent = onSent;
    this.onFailed = onFailed;
    this.onSynced = onSynced;
    this.prepare = prepare;
    this.reconsider = reconsider;
    this.connection = null;
    this.flushing = false;
    this.flushAgain = false;
    this.retryTimer = null;
    this.notBefore = 0; // a rate limit's wait: no send before this time
    this.answered = new Set(); // ids this tab or another one got a final answer for
    for (const id of this.readAnswered()) this.noteAnswered(id);
    this.entries = this.readEntries().filter((entry) => !this.answered.has(idOf(entry)));
    this.handleStorage = (event) => {
      if (event.storageArea !== localStorage) return;
      if (event.key !== null && event.key !== this.storageKey && event.key !== this.answeredKey) return;
      this.sync();
    };
    window.addEventListener('storage', this.handleStorage);
  }

  readEntries() {
    try {
      const entries = JSON.parse(localStorage.getItem(this.storageKey) ?? '[]');
      return Array.isArray(entries) ? entries.filter((entry) => typeof entry?.frame?.client_msg_id === 'string') : [];
    } catch {
      return [];
    }
  }

  readAnswered() {
    try {
      const ids = JSON.parse(localStorage.getItem(this.answeredKey) ?? '[]');
      return Array.isArray(ids) ? ids.filter((id) => typeof id === 'string') : [];
    } catch {
      return [];
    }
  }

  noteAnswered(id) {
    this.answered.delete(id);
    this.answered.add(id);
    while (this.answered.size > ANSWERED_KEEP) this.answered.delete(this.answered.values().next().value);
  }

  /**
   * Merge the stored list into ours: entries another tab added come in, entries someone got the answer for
   * go, and ours stay even if another tab's write lost them. Our copy wins where both have an entry (it may
   * have been retargeted). Returns what changed relative to this tab's list.
   */
  merge() {
    for (const id of this.readAnswered()) {
      if (!this.answered.has(id)) this.noteAnswered(id);
    }
    const mine = new Map(this.entries.map((entry) => [idOf(entry), entry]));
    const merged = new Map();
    const added = [];
    for (const entry of this.readEntries()) {
      const id = idOf(entry);
      if (this.answered.has(id) || merged.has(id)) continue;
      if (mine.has(id)) {
        merged.set(id, mine.get(id));
      } else {
        merged.set(id, entry);
        added.push(entry);
      }
    }
    const gone = [];
    for (const [id, entry] of mine) {
      if (merged.has(id)) continue;
      if (this.answered.has(id)) gone.push(entry);
      else merged.set(id, entry);
    }
    // Oldest first, as they were written, whichever tab wrote them.
    this.entries = [...merged.values()].sort((a, b) => (a.createdMs ?? 0) - (b.createdMs ?? 0));
    return { added, gone };
  }

  /** Write the merged list back (the only way entries reach storage). */
  save() {
    const changes = this.merge();
    if (this.entries.length === 0) localStorage.removeItem(this.storageKey);
    else localStorage.setItem(this.storageKey, JSON.stringify(this.entries));
    if (this.answered.size === 0) localStorage.removeItem(this.answeredKey);
    else localStorage.setItem(this.answeredKey, JSON.stringify([...this.answered]));
    this.report(changes);
  }

  /** Another tab wrote: take its entries in, drop what it got answers for. */
  sync() {
    const changes = this.merge();
    this.report(changes);
    if (changes.added.length > 0) this.flush();
  }

  report(changes) {
    if (changes.added.length > 0 || changes.gone.length > 0) this.onSynced(changes);
  }

  /** @param {object} entry {frame, convKey, createdMs, ...}; the frame must carry client_msg_id */
  add(entry) {
    this.entries.push(entry);
    this.save();
    this.flush();
  }

  /** The server answered for good (stored it or refused it): no tab may send it again. */
  remove(clientMsgId) {
    this.noteAnswered(clientMsgId);
    this.entries = this.entries.filter((entry) => idOf(entry) !== clientMsgId);
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
    this.answered.clear();
    localStorage.removeItem(this.storageKey);
    localStorage.removeItem(this.answeredKey);
    window.removeEventListener('storage', this.handleStorage);
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
    clearTimeout(this.retryTimer);
    const wait = this.notBefore - Date.now();
    if (wait > 0) {
      // The server asked us to slow down; nothing goes out before then, whatever asks for a flush.
      this.retryTimer = setTimeout(() => this.flush(), wait);
      return;
    }
    this.flushing = true;
    try {
      while (this.entries.length > 0 && this.connection?.online) {
        const entry = this.entries[0];
        let reply;
        try {
          reply = await this.connection.request(await this.prepare(entry));
        } catch (err) {
          if (err.transient) {
            // The connection's own reconnect calls flush again; a busy store answers in a moment.
            const delay = err.retryAfterMs ?? RETRY_AFTER_TRANSIENT_MS;
            if (err.retryAfterMs) this.notBefore = Date.now() + delay;
            if (this.connection.online) this.retryTimer = setTimeout(() => this.flush(), delay);
            break;
          }
          if (this.reconsider(entry, err)) {
            this.save();
            continue;
          }
          this.remove(idOf(entry));
          this.onFailed(entry, err);
          continue;
        }
        this.remove(idOf(entry));
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

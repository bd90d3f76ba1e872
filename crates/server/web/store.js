// What the client knows: conversations, their messages, receipt cursors,
// typing and presence. Frames and REST answers go in; views read it out and
// listen for `change`. Everything that arrives more than once (an event sent
// again because its ack was lost, a history page overlapping live frames)
// is deduplicated here, by message id.

import { REJECTED } from './crypto.js';

const DISPLAYED_KINDS = new Set(['text', 'system']);
// Shown for a message of an end-to-end encrypted conversation this browser
// cannot decrypt (its key never came, or no keys here), never its ciphertext.
export const UNREADABLE = '🔒 encrypted message: this browser cannot decrypt it';
// A typing indication lapses at expires_ms; this is the fallback when the
// server's clock and ours disagree too much to use it.
const TYPING_TTL_MS = 6000;
// Reactions, edits and deletes whose target is not loaded yet, kept per conversation until history brings it.
const DEFERRED_MAX = 500;

/** Receipt cursors only move forward: a list fetched before a live frame must not take a tick back. */
function moveCursor(cursors, user, seq) {
  if (Number.isSafeInteger(seq) && seq > (cursors.get(user) ?? 0)) cursors.set(user, seq);
}

function reactionsMap(list) {
  return new Map((list ?? []).map((reaction) => [reaction.user, reaction.emoji]));
}

/** Timeline order: stored messages by seq, then unsent ones in the order they were written. */
function timelineOrder(a, b) {
  return (a.seq ?? Infinity) - (b.seq ?? Infinity) || a.localOrder - b.localOrder;
}

/** What an event changes on its target: the text (edits, deletes) or one user's reaction. */
// A disappearing message past its time is gone, here as on the server.
function shown(msg) {
  return DISPLAYED_KINDS.has(msg.kind) && !(msg.expires_ms && msg.expires_ms <= Date.now());
}

/** What a stored text shows: an encrypted one its plaintext (opened by crypto.js) or why it cannot be read. */
function displayedText(event) {
  if (event.kind !== 'encrypted' || event.decrypted) return event.text ?? '';
  return REJECTED[event.decrypt_error] ?? UNREADABLE;
}

// An encrypted message takes a text's place on screen.
function shownKind(kind) {
  return kind === 'encrypted' ? 'text' : kind ?? 'text';
}

function fieldOf(kind, from) {
  return kind === 'reaction' ? `r:${from}` : 'text';
}

const FRAME_KINDS = { react: 'reaction', edit: 'edit', delete: 'delete' };

function newConversation(key, fields) {
  return {
    key,
    id: null,
    kind: 'direct',
    name: '',
    peer: null,
    members: [],
    encrypted: false, // end-to-end: texts typed here go out sealed
    lastSeq: 0,
    readSeq: 0,
    unread: 0,
    countedSeq: 0, // the unread count covers events up to here
    missing: false, // a draft whose user does not exist
    activityMs: 0,
    messages: new Map(), // by message id, or `local:<client_msg_id>` until the server answers
    seenEvents: new Set(), // ids of reactions, edits and deletes already applied
    deferred: new Map(), // message id -> a reaction, edit or delete whose target is not loaded yet
    history: 'none', // 'none' | 'loading' | 'loaded'
    nextBefore: null,
    loadingOlder: false,
    // Receipt cursors of the other members, from `delivered`/`read` frames and the conversation list.
    deliveredUpTo: new Map(), // user -> a device of theirs has every event up to this seq
    readUpTo: new Map(), // user -> they read up to this seq
    expired: [], // {fromSeq, toSeq}: events that passed the offline TTL before they reached this device
    typing: new Map(), // user -> expiry (our clock)
    left: false,
    listMisses: 0, // conversation lists that did not have this one
    ...fields,
  };
}

export class Store extends EventTarget {
  constructor(me) {
    super();
    this.me = me; // {username, deviceId}
    this.conversations = new Map();
    this.presence = new Map();
    this.openKey = null;
    this.visible = true;
    this.needsListRefresh = false;
    this.typingTimers = new Map();
  }

  changed(detail = {}) {
    this.dispatchEvent(new CustomEvent('change', { detail }));
  }

  /** Presence is unknown while disconnected: drop it (the next subscription brings it back). */
  forgetPresence() {
    if (this.presence.size === 0) return;
    const users = [...this.presence.keys()];
    this.presence.clear();
    for (const user of users) this.changed({ presence: user });
  }

  // ---- conversations --------------------------------------------------------

  get(key) {
    return this.conversations.get(String(key)) ?? null;
  }

  sorted() {
    return [...this.conversations.values()].sort((a, b) => b.activityMs - a.activityMs || (b.id ?? 0) - (a.id ?? 0));
  }

  title(conv) {
    if (conv.kind === 'group') return conv.name || 'Group';
    if (conv.peer) return conv.peer;
    // Not in the list yet (it is being fetched): name it after whoever wrote.
    for (const msg of conv.messages.values()) {
      if (msg.from && msg.from !== this.me.username) return msg.from;
    }
    return 'New chat';
  }

  findDirect(username) {
    for (const conv of this.conversations.values()) {
      if (conv.kind === 'direct' && conv.peer === username && !conv.missing) return conv;
    }
    return null;
  }

  /** A chat with someone we have no conversation with yet; it becomes real with the first `sent`. */
  draftFor(username) {
    const existing = this.findDirect(username);
    if (existing) return existing;
    const key = `u:${username}`;
    const conv = newConversation(key, { peer: username, members: [this.me.username, username], activityMs: Date.now(), history: 'loaded' });
    this.conversations.set(key, conv);
    this.changed({ list: true });
    return conv;
  }

  ensure(id) {
    const key = String(id);
    let conv = this.conversations.get(key);
    if (!conv) {
      // Someone wrote in a conversation the list has not shown yet (a new chat, a group we were added to).
      conv = newConversation(key, { id, kind: 'unknown' });
      this.conversations.set(key, conv);
      this.needsListRefresh = true;
    }
    return conv;
  }

  /** Merge `GET /v1/conversations`. */
  setConversations(list) {
    const present = new Set();
    for (const summary of list) {
      const key = String(summary.conversation);
      present.add(key);
      let conv = this.conversations.get(key);
      const peer = summary.kind === 'direct'
        ? summary.members.find((member) => member !== this.me.username) ?? this.me.username
        : null;
      if (!conv && peer) {
        const draft = this.conversations.get(`u:${peer}`);
        if (draft) conv = this.promoteDraft(draft, summary.conversation);
      }
      if (!conv) {
        conv = newConversation(key, { id: summary.conversation });
        this.conversations.set(key, conv);
      }
      conv.kind = summary.kind;
      conv.name = summary.name ?? '';
      conv.peer = peer;
      conv.members = summary.members;
      conv.encrypted = Boolean(summary.encrypted);
      conv.left = false;
      conv.lastSeq = Math.max(conv.lastSeq, summary.last_seq);
      conv.readSeq = Math.max(conv.readSeq, summary.read_seq);
      // The server counts other members' texts above its read pointer; ours may be newer (a read still on its way),
      // and nothing at or below ours is unread.
      conv.unread = this.isOpenAndVisible(conv)
        ? 0
        : Math.min(summary.unread, Math.max(0, conv.lastSeq - conv.readSeq));
      conv.countedSeq = Math.max(conv.countedSeq, conv.lastSeq);
      // The cursors as they are now: `delivered` and `read` frames are live only, so whatever moved while this
      // page was closed or offline is known from here.
      for (const receipt of summary.receipts ?? []) {
        moveCursor(conv.deliveredUpTo, receipt.user, receipt.delivered_seq);
        moveCursor(conv.readUpTo, receipt.user, receipt.read_seq);
      }
      if (summary.last_message) {
        this.insertHistory(conv, [summary.last_message], summary.last_seq);
        conv.activityMs = Math.max(conv.activityMs, summary.last_message.ts_ms);
      }
    }
    let placeholders = 0;
    for (const [key, conv] of this.conversations) {
      if (conv.id === null || present.has(key)) continue;
      if (conv.kind === 'unknown' && ++conv.listMisses < 2) {
        // A message made it after this list was read: the next list will have it.
        placeholders++;
      } else if (key === this.openKey) {
        // We left or were removed; keep an open chat readable, drop the rest from the list.
        conv.left = true;
      } else {
        this.conversations.delete(key);
      }
    }
    this.needsListRefresh = placeholders > 0;
    this.changed({ list: true });
  }

  promoteDraft(draft, id) {
    const key = String(id);
    const draftKey = draft.key;
    this.conversations.delete(draftKey);
    const existing = this.conversations.get(key);
    if (this.openKey === draftKey) this.openKey = key;
    if (existing) {
      for (const [msgKey, msg] of draft.messages) existing.messages.set(msgKey, msg);
      return existing;
    }
    draft.key = key;
    draft.id = id;
    draft.history = 'none';
    this.conversations.set(key, draft);
    return draft;
  }

  isOpenAndVisible(conv) {
    return this.visible && this.openKey === conv.key;
  }

  others(conv) {
    const others = conv.members.filter((member) => member !== this.me.username);
    if (others.length === 0 && conv.peer && conv.peer !== this.me.username) return [conv.peer];
    return others;
  }

  // ---- messages ---------------------------------------------------------------

  /** Messages to show, oldest first; unsent ones last, in the order they were written. */
  timeline(conv) {
    return [...conv.messages.values()].filter((msg) => shown(msg)).sort(timelineOrder);
  }

  lastShown(conv) {
    let last = null;
    for (const msg of conv.messages.values()) {
      if (shown(msg) && (!last || timelineOrder(msg, last) > 0)) last = msg;
    }
    return last;
  }

  makeMessage(event, extra = {}) {
    return {
      key: event.message_id,
      uiKey: extra.key ?? event.message_id, // stays put when a sent message gets its server id
      message_id: event.message_id,
      client_msg_id: event.client_msg_id ?? '',
      from: event.from,
      from_device: event.from_device,
      seq: event.seq,
      kind: shownKind(event.kind),
      text: displayedText(event),
      sealed: event.kind === 'encrypted',
      // Encrypted and not (yet) readable here: a copy that is readable (its key came since) takes its place.
      unopened: event.kind === 'encrypted' && !event.decrypted && !event.deleted,
      media: event.media ?? [],
      target: event.target ?? null,
      event: event.event ?? null,
      edited_ms: event.edited_ms ?? null,
      deleted: Boolean(event.deleted),
      ts_ms: event.ts_ms,
      expires_ms: event.expires_ms ?? null,
      reactions: reactionsMap(event.reactions),
      stateSeq: event.seq, // the state shown is complete up to this seq
      fieldSeqs: new Map(), // field (see fieldOf) -> seq of the event that last set it, when above stateSeq
      status: 'sent',
      error: null,
      localOrder: 0,
      version: 1,
      ...extra,
    };
  }

  /** Put a stored text or system event in place, replacing our own unsent copy if this is it. Returns false for a duplicate. */
  insertShown(conv, msg) {
    if (conv.messages.has(msg.message_id)) return false;
    if (msg.from === this.me.username && msg.from_device === this.me.deviceId && msg.client_msg_id) {
      const local = conv.messages.get(`local:${msg.client_msg_id}`);
      if (local) {
        conv.messages.delete(local.key);
        msg.localOrder = local.localOrder;
        msg.uiKey = local.uiKey;
      }
    }
    conv.messages.set(msg.message_id, msg);
    conv.activityMs = Math.max(conv.activityMs, msg.ts_ms);
    return true;
  }

  /** A readable copy of an encrypted message shown as unreadable (history read before its key came): true if taken. */
  opened(conv, msg) {
    const shown = conv.messages.get(msg.message_id);
    if (!shown?.unopened || msg.unopened || shown.deleted) return false;
    Object.assign(shown, { text: msg.text, target: msg.target, unopened: false });
    shown.version++;
    return true;
  }

  /** Apply a stored event or a live frame. */
  applyFrame(frame) {
    switch (frame.type) {
      case 'message':
        this.applyEvent(frame);
        break;
      case 'expired':
        this.applyExpired(frame);
        break;
      case 'delivered': {
        // A cursor: every event up to `seq` reached a device of `by`, so it covers each earlier message too.
        const conv = this.ensure(frame.conversation);
        moveCursor(conv.deliveredUpTo, frame.by, frame.seq);
        this.changed({ key: conv.key, receipts: true });
        break;
      }
      case 'read': {
        const conv = this.ensure(frame.conversation);
        moveCursor(conv.readUpTo, frame.by, frame.seq);
        if (frame.by === this.me.username) {
          // Read on another device of ours.
          conv.readSeq = Math.max(conv.readSeq, frame.seq);
          conv.unread = Math.min(conv.unread, Math.max(0, conv.lastSeq - conv.readSeq));
        }
        this.changed({ key: conv.key, receipts: true, list: true });
        break;
      }
      case 'typing':
        this.applyTyping(frame);
        break;
      case 'presence':
        this.presence.set(frame.user, { online: frame.online, lastSeenMs: frame.last_seen_ms ?? null });
        this.changed({ presence: frame.user });
        break;
      default:
        // Frames this version does not know are ignored, as the protocol lets servers add them.
        break;
    }
  }

  applyEvent(event) {
    const conv = this.ensure(event.conversation);
    conv.lastSeq = Math.max(conv.lastSeq, event.seq);
    const kind = shownKind(event.kind);
    if (DISPLAYED_KINDS.has(kind)) {
      const msg = this.makeMessage(event);
      if (!this.insertShown(conv, msg)) {
        if (this.opened(conv, msg)) this.changed({ key: conv.key, message: msg.key, list: true });
        return;
      }
      if (event.from !== this.me.username) {
        conv.typing.delete(event.from);
        // Not if the conversation list already counted it, or we read it on another device.
        if (!this.isOpenAndVisible(conv) && event.seq > conv.readSeq && event.seq > conv.countedSeq) {
          conv.unread = Math.min(conv.unread + 1, Math.max(0, conv.lastSeq - conv.readSeq));
        }
      }
      conv.countedSeq = Math.max(conv.countedSeq, event.seq);
      if (kind === 'system') this.applySystem(conv, event);
      this.changed({ key: conv.key, message: msg.key, incoming: event.from !== this.me.username, list: true });
      return;
    }
    conv.countedSeq = Math.max(conv.countedSeq, event.seq);
    if (conv.seenEvents.has(event.message_id)) return;
    if (!event.target) {
      conv.seenEvents.add(event.message_id);
      return;
    }
    const target = conv.messages.get(event.target);
    if (!target) {
      // Not loaded yet. The page that brings it may predate this event, so keep the event to apply then.
      this.defer(conv, event);
      return;
    }
    conv.seenEvents.add(event.message_id);
    if (this.applyEventTo(target, event)) this.changed({ key: conv.key, message: target.key, list: true });
  }

  /**
   * Events `from_seq..=to_seq` will never reach this device (they outlived the offline TTL, or were purged): the
   * chat says so where they would have been, rather than leave a silent gap.
   */
  applyExpired(frame) {
    const conv = this.ensure(frame.conversation);
    const fromSeq = frame.from_seq;
    const toSeq = frame.to_seq;
    if (!(fromSeq <= toSeq)) return;
    conv.lastSeq = Math.max(conv.lastSeq, toSeq);
    conv.countedSeq = Math.max(conv.countedSeq, toSeq);
    // Sent again if its ack was lost on the way.
    if (conv.expired.some((range) => range.fromSeq <= fromSeq && toSeq <= range.toSeq)) return;
    // A wider range sent again (more expired meanwhile) replaces the ones it covers.
    conv.expired = conv.expired.filter((range) => !(fromSeq <= range.fromSeq && range.toSeq <= toSeq));
    conv.expired.push({ fromSeq, toSeq });
    conv.expired.sort((a, b) => a.fromSeq - b.fromSeq);
    this.changed({ key: conv.key, expired: true, list: true });
  }

  /**
   * The expired ranges to note in the chat. A range drops out once a history page shows a message of it: then
   * the server still had them (history outlives the offline TTL when so configured), and they can be read.
   */
  expiredNotes(conv) {
    if (conv.expired.length === 0) return [];
    const shown = [...conv.messages.values()].map((msg) => msg.seq).filter((seq) => seq !== null);
    return conv.expired.filter((range) => !shown.some((seq) => range.fromSeq <= seq && seq <= range.toSeq));
  }

  defer(conv, event) {
    conv.deferred.delete(event.message_id);
    conv.deferred.set(event.message_id, event);
    if (conv.deferred.size > DEFERRED_MAX) conv.deferred.delete(conv.deferred.keys().next().value);
  }

  /** Apply the deferred events whose targets are loaded now. */
  replayDeferred(conv) {
    let changed = false;
    for (const [id, event] of conv.deferred) {
      const target = conv.messages.get(event.target);
      if (!target) continue;
      conv.deferred.delete(id);
      conv.seenEvents.add(id);
      if (this.applyEventTo(target, event)) changed = true;
    }
    return changed;
  }

  /**
   * Apply a reaction, edit or delete with its seq, unless the target already shows something newer for the
   * same field: each user's reaction and the text are ordered separately, so events may come in any order.
   */
  applyEventTo(target, event) {
    const kind = event.kind ?? 'text';
    const field = fieldOf(kind, event.from);
    if (event.seq <= Math.max(target.stateSeq, target.fieldSeqs.get(field) ?? 0)) return false;
    target.fieldSeqs.set(field, event.seq);
    return this.applyChange(target, kind, event.from, event.text ?? '', event.ts_ms);
  }

  applyChange(target, kind, from, text, tsMs) {
    // A deleted message takes no reactions or edits, whatever order they come in.
    if (target.deleted) return false;
    if (kind === 'reaction') {
      if (text) target.reactions.set(from, text);
      else target.reactions.delete(from);
    } else if (kind === 'edit') {
      if (!target.deleted) {
        target.text = text;
        target.edited_ms = tsMs;
      }
    } else if (kind === 'delete') {
      target.deleted = true;
      target.text = '';
      target.media = [];
      target.reactions.clear();
    } else {
      return false;
    }
    target.version++;
    return true;
  }

  applySystem(conv, event) {
    const detail = event.event ?? {};
    const users = detail.users ?? [];
    if ((detail.action === 'removed' && users.includes(this.me.username))
        || (detail.action === 'left' && detail.actor === this.me.username)) {
      conv.left = true;
    }
    if (detail.action === 'renamed' && detail.name) conv.name = detail.name;
    if (detail.action === 'encrypted') conv.encrypted = true;
    // Member lists and roles come from the server rather than being replayed here.
    this.needsListRefresh = true;
  }

  /** Forgets the disappearing messages whose time has come; true if any went. */
  dropExpired(now = Date.now()) {
    let dropped = false;
    for (const conv of this.conversations.values()) {
      for (const [key, msg] of conv.messages) {
        if (msg.expires_ms && msg.expires_ms <= now) {
          conv.messages.delete(key);
          dropped = true;
        }
      }
    }
    return dropped;
  }

  /**
   * Merge a page of `GET .../messages` (any order). `knownLastSeq` is the conversation's last seq as known
   * before the request was made: every event up to it is reflected in the page, later ones may not be.
   */
  insertHistory(conv, messages, knownLastSeq = 0) {
    const floor = Math.max(knownLastSeq, ...messages.map((message) => message.seq));
    for (const message of messages) {
      conv.lastSeq = Math.max(conv.lastSeq, message.seq);
      if (!DISPLAYED_KINDS.has(shownKind(message.kind))) {
        conv.seenEvents.add(message.message_id);
        continue;
      }
      const existing = conv.messages.get(message.message_id);
      if (existing) {
        if (existing.stateSeq < floor) this.takeState(existing, message, floor);
        continue;
      }
      this.insertShown(conv, this.makeMessage(message, { stateSeq: floor }));
    }
    this.replayDeferred(conv);
  }

  /** Show a page's state of a message we have, keeping what live events newer than the page set. */
  takeState(msg, message, floor) {
    let text = displayedText(message);
    let editedMs = message.edited_ms ?? null;
    let deleted = Boolean(message.deleted);
    const reactions = reactionsMap(message.reactions);
    for (const [field, seq] of msg.fieldSeqs) {
      if (seq <= floor) {
        msg.fieldSeqs.delete(field);
      } else if (field === 'text') {
        if (msg.deleted) deleted = true;
        else if (!deleted) [text, editedMs] = [msg.text, msg.edited_ms];
      } else {
        const user = field.slice(2);
        if (msg.reactions.has(user)) reactions.set(user, msg.reactions.get(user));
        else reactions.delete(user);
      }
    }
    if (deleted) {
      text = '';
      reactions.clear();
    }
    Object.assign(msg, {
      text, deleted, edited_ms: editedMs, media: deleted ? [] : message.media ?? [], reactions, stateSeq: floor,
    });
    msg.version++;
  }

  historyPage(conv, page, knownLastSeq) {
    this.insertHistory(conv, page.messages, knownLastSeq);
    conv.nextBefore = page.next_before ?? null;
    conv.history = 'loaded';
    this.changed({ key: conv.key, history: true, list: true });
  }

  /** The newest page as the server has it now, replacing what we show (after a refused change of ours). */
  resetToPage(conv, page, knownLastSeq) {
    for (const msg of conv.messages.values()) {
      msg.stateSeq = 0;
      msg.fieldSeqs.clear();
    }
    this.insertHistory(conv, page.messages, knownLastSeq);
    this.changed({ key: conv.key, list: true });
  }

  // ---- our own messages ---------------------------------------------------------

  addPending(conv, { clientMsgId, text, target = null, media = [], createdMs = Date.now() }) {
    const msg = this.makeMessage({
      message_id: null,
      client_msg_id: clientMsgId,
      from: this.me.username,
      from_device: this.me.deviceId,
      seq: null,
      kind: 'text',
      text,
      media,
      target,
      ts_ms: createdMs,
    }, { key: `local:${clientMsgId}`, status: 'pending', localOrder: createdMs + Math.random() / 2 });
    conv.messages.set(msg.key, msg);
    conv.activityMs = Math.max(conv.activityMs, createdMs);
    this.changed({ key: conv.key, message: msg.key, list: true, own: true });
    return msg;
  }

  /** The server stored one of our frames. */
  confirmed(entry, reply) {
    let conv = this.get(entry.convKey);
    if (conv && conv.id === null && entry.frame.to) {
      conv = this.promoteDraft(conv, reply.conversation);
      this.needsListRefresh = true;
    }
    conv = conv ?? this.ensure(reply.conversation);
    conv.lastSeq = Math.max(conv.lastSeq, reply.seq);
    if (entry.frame.type === 'send') {
      const local = conv.messages.get(`local:${entry.frame.client_msg_id}`);
      if (local && !conv.messages.has(reply.message_id)) {
        conv.messages.delete(local.key);
        Object.assign(local, {
          key: reply.message_id, message_id: reply.message_id, seq: reply.seq, ts_ms: reply.ts_ms,
          stateSeq: reply.seq, status: 'sent',
        });
        local.version++;
        conv.messages.set(local.key, local);
      } else if (local) {
        conv.messages.delete(local.key);
      }
      conv.activityMs = Math.max(conv.activityMs, reply.ts_ms);
    } else {
      conv.seenEvents.add(reply.message_id);
      const target = conv.messages.get(entry.frame.target);
      if (target) {
        // Our change, now with its seq: older events for the same field cannot undo it, newer ones still apply.
        // (A page merged since we made it may have shown the state before it; this puts it back.)
        this.applyEventTo(target, {
          kind: FRAME_KINDS[entry.frame.type],
          from: this.me.username,
          text: entry.frame.text ?? entry.frame.emoji ?? '',
          seq: reply.seq,
          ts_ms: reply.ts_ms ?? Date.now(),
        });
      }
    }
    this.changed({ key: conv.key, list: true, own: true });
    return conv;
  }

  failed(entry, error) {
    const conv = this.get(entry.convKey);
    if (!conv) return;
    if (entry.frame.type === 'send') {
      const local = conv.messages.get(`local:${entry.frame.client_msg_id}`);
      if (local) {
        local.status = 'failed';
        local.error = error.message;
        local.version++;
      }
    }
    this.changed({ key: conv.key, list: true });
  }

  /** `send` `to` a user the server does not know: the draft cannot become a chat. */
  userMissing(username) {
    const conv = this.conversations.get(`u:${username}`);
    if (!conv || conv.id !== null) return;
    conv.missing = true;
    // The open chat stays to say why; it goes when the user moves on (see closeMissing).
    if (this.openKey !== conv.key) this.conversations.delete(conv.key);
    this.changed({ key: conv.key, list: true });
  }

  /** Forget a missing user's draft once it is no longer open. */
  closeMissing(key) {
    const conv = this.conversations.get(key);
    if (conv?.missing && this.openKey !== key) this.conversations.delete(key);
  }

  discard(conv, msg) {
    conv.messages.delete(msg.key);
    this.changed({ key: conv.key, list: true });
  }

  /** Our own reaction, edit or delete, shown at once; the server's answer comes later. */
  applyOwnChange(conv, target, kind, text) {
    this.applyChange(target, kind, this.me.username, text, Date.now());
    this.changed({ key: conv.key, message: target.key, list: true });
  }

  /**
   * ✓ sent, ✓✓ delivered to every other member, highlighted ✓✓ read by all of them: a message is covered once
   * each one's cursor has reached its seq. Reading implies having, so a read cursor counts as delivered too.
   */
  tickState(conv, msg) {
    if (msg.status === 'pending') return 'pending';
    if (msg.status === 'failed') return 'failed';
    const others = this.others(conv);
    if (others.length === 0) return 'sent';
    if (others.every((user) => (conv.readUpTo.get(user) ?? 0) >= msg.seq)) return 'read';
    if (others.every((user) => Math.max(conv.deliveredUpTo.get(user) ?? 0, conv.readUpTo.get(user) ?? 0) >= msg.seq)) {
      return 'delivered';
    }
    return 'sent';
  }

  // ---- ephemeral ----------------------------------------------------------------------

  applyTyping(frame) {
    const conv = this.ensure(frame.conversation);
    const timerKey = `${conv.key}/${frame.from}`;
    clearTimeout(this.typingTimers.get(timerKey));
    if (frame.state === 'start') {
      let ttl = frame.expires_ms - Date.now();
      if (!(ttl > 0 && ttl <= 2 * TYPING_TTL_MS)) ttl = TYPING_TTL_MS;
      conv.typing.set(frame.from, Date.now() + ttl);
      this.typingTimers.set(timerKey, setTimeout(() => {
        conv.typing.delete(frame.from);
        this.typingTimers.delete(timerKey);
        this.changed({ key: conv.key, typing: true, list: true });
      }, ttl));
    } else {
      conv.typing.delete(frame.from);
      this.typingTimers.delete(timerKey);
    }
    this.changed({ key: conv.key, typing: true, list: true });
  }

  typers(conv) {
    return [...conv.typing.keys()];
  }

  directPeers() {
    const peers = new Set();
    for (const conv of this.conversations.values()) {
      if (conv.kind === 'direct' && conv.peer && conv.peer !== this.me.username && !conv.missing) peers.add(conv.peer);
    }
    return [...peers].sort();
  }

  totalUnread() {
    let total = 0;
    for (const conv of this.conversations.values()) total += conv.unread;
    return total;
  }
}

// The open chat: header (title, presence, typing), the message log with
// history paging, the per-message menu (react, reply, copy, edit, delete) and the
// composer with attachments.

import { h, $, formatTime, formatDay, dayKey, formatLastSeen, formatBytes, initial, hueClass, describeError } from './dom.js';
import { systemText, previewText, typingText } from './list.js';
import { icon, tickElement, setTick } from './icons.js';
import { ApiError, TEXT_BYTES_MAX, utf8Bytes } from '../api.js';
import { AttachDialog } from './dialogs.js';
import { SearchBar } from './search.js';

const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const EDIT_WINDOW_MS = 15 * 60 * 1000; // delivery.edit_window_secs; the server has the last word
const TYPING_REFRESH_MS = 3000; // the server lets an indication lapse after 6 s
const TYPING_IDLE_MS = 4000;
const NEAR_TOP_PX = 150;
const NEAR_BOTTOM_PX = 80;
const THUMB_EDGE_PX = 320;
// How long a message found through search stays highlighted.
const FOUND_MS = 2000;
// The message menu keeps this far from the viewport's edges, and this far from its bubble.
const MENU_MARGIN_PX = 8;
const MENU_GAP_PX = 6;
// The parts of a message bubble, in document order; each is present or absent, and updated in place.
// What the server takes as plain media (it checks the bytes again); the file picker offers these.
const PLAIN_FILE_TYPES = 'image/*,video/*,audio/*,application/pdf';
const PARTS = ['author', 'quote', 'media', 'text', 'meta', 'failed', 'reactions', 'menu'];

/**
 * The note for events that expired before they reached this device. It counts every event of the range as the
 * server numbers them (a reaction or an edit is one too): what the user needs is that something is missing here.
 */
function expiredText({ fromSeq, toSeq }) {
  const count = toSeq - fromSeq + 1;
  return count === 1
    ? 'A message expired before it reached this device'
    : `${count} messages expired before they reached this device`;
}

/** Why a text cannot be sent, or null: the server refuses texts over limits.text_bytes_max. */
function textTooLong(text) {
  const bytes = utf8Bytes(text);
  if (bytes <= TEXT_BYTES_MAX) return null;
  return `This message is too long to send: ${formatBytes(bytes)}, and the limit is ${formatBytes(TEXT_BYTES_MAX)}. `
    + 'Shorten it or split it into several messages.';
}

export class ChatView {
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.convKey = null;
    this.items = new Map(); // uiKey -> <li>
    this.context = null; // {mode: 'reply'|'edit', msg}
    this.typingSentAt = 0;
    this.typingIdleTimer = null;
    this.upload = null;
    this.menuFor = null;
    this.failedThumbnails = new Map(); // <img> -> how to fetch its thumbnail again, for those the server was away for

    this.empty = $('#chat-empty');
    this.main = $('#chat-main');
    this.title = $('#chat-title');
    this.avatar = $('#chat-avatar');
    this.typing = $('#chat-typing');
    this.presence = $('#chat-presence');
    this.encrypted = $('#chat-encrypted');
    this.verifyState = $('#chat-verify-state');
    this.verifyButton = $('#verify-button');
    this.groupButton = $('#group-info-button');
    this.box = $('#messages');
    this.list = $('#message-list');
    this.historyStatus = $('#history-status');
    this.composer = $('#composer');
    this.input = $('#message-input');
    this.fileInput = $('#file-input');
    this.contextBar = $('#compose-context');
    this.error = $('#composer-error');
    this.uploadStatus = $('#upload-status');
    this.uploadProgress = $('#upload-progress');
    this.uploadLabel = $('#upload-label');
    this.leftNote = $('#left-note');
    this.menu = $('#message-menu');
    this.attachDialog = new AttachDialog(textTooLong);
    this.search = new SearchBar(store, {
      search: (conv, query, before) => this.actions.search(conv, query, before),
      reveal: (messageId) => this.reveal(messageId),
    });
    this.busyFrame = 0;

    this.box.setAttribute('aria-relevant', 'additions');
    this.bind();
  }

  bind() {
    $('#back-button').addEventListener('click', () => this.actions.back());
    this.verifyButton.addEventListener('click', () => this.actions.verify(this.current()));
    this.groupButton.addEventListener('click', () => this.actions.groupInfo(this.current()));
    this.composer.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.submit();
      } else if (event.key === 'Escape' && this.context) {
        event.preventDefault();
        this.clearContext();
      }
    });
    this.input.addEventListener('input', () => {
      this.autoGrow();
      this.noteTyping();
    });
    this.input.addEventListener('blur', () => this.stopTyping());
    $('#compose-context-cancel').addEventListener('click', () => {
      this.clearContext();
      this.input.focus();
    });
    this.fileInput.addEventListener('change', () => {
      const file = this.fileInput.files?.[0];
      this.fileInput.value = '';
      if (file) this.offerFile(file);
    });
    this.input.addEventListener('paste', (event) => {
      const file = event.clipboardData?.files?.[0];
      if (!file) return; // text is pasted as usual
      event.preventDefault();
      this.offerFile(file);
    });
    this.bindDrop();
    $('#upload-cancel').addEventListener('click', () => this.upload?.abort());
    this.box.addEventListener('scroll', () => {
      // The menu is placed next to its message; once that moves away, the menu would point at nothing.
      if (this.menuFor && Math.abs(this.box.scrollTop - this.menuFor.scrollTop) > 24) this.closeMenu();
      this.maybeLoadOlder();
    }, { passive: true });
    this.menu.addEventListener('keydown', (event) => this.menuKey(event));
    document.addEventListener('pointerdown', (event) => {
      if (!this.menu.hidden && !this.menu.contains(event.target) && event.target !== this.menuFor?.button) this.closeMenu();
    });
  }

  /** Files dragged onto the open chat are offered like picked ones; dropped anywhere else, they are ignored. */
  bindDrop() {
    const carriesFiles = (event) => event.dataTransfer?.types.includes('Files');
    const accepts = (event) => carriesFiles(event) && !this.main.hidden && !this.composer.hidden;
    this.main.addEventListener('dragover', (event) => {
      if (!accepts(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = 'copy';
      this.main.classList.add('dropping');
    });
    this.main.addEventListener('dragleave', (event) => {
      if (!this.main.contains(event.relatedTarget)) this.main.classList.remove('dropping');
    });
    this.main.addEventListener('drop', (event) => {
      this.main.classList.remove('dropping');
      if (!accepts(event)) return;
      event.preventDefault();
      const file = event.dataTransfer.files[0];
      if (file) this.offerFile(file);
    });
    // Left to the browser, a file dropped beside the chat would replace the app with the file.
    for (const type of ['dragover', 'drop']) {
      document.addEventListener(type, (event) => {
        if (carriesFiles(event)) event.preventDefault();
      });
    }
  }

  current() {
    return this.store.get(this.store.openKey);
  }

  // ---- rendering ----------------------------------------------------------------

  render(detail = {}) {
    const conv = this.current();
    if (!conv) {
      this.convKey = null;
      this.empty.hidden = false;
      this.main.hidden = true;
      this.closeMenu();
      this.search.close({ restoreFocus: false });
      return;
    }
    const switched = conv.key !== this.convKey;
    if (switched) {
      const sameChat = this.convKey && this.convKey.startsWith('u:') && conv.peer === this.convKey.slice(2);
      this.convKey = conv.key;
      if (!sameChat) this.reset();
    }
    this.empty.hidden = true;
    this.main.hidden = false;
    this.renderHeader(conv);
    this.renderMessages(conv, detail, switched);
    const closed = conv.left || conv.missing;
    this.composer.hidden = closed;
    this.leftNote.hidden = !closed;
    const note = conv.missing
      ? `No user named ${conv.peer}. Check the name and start the chat again.`
      : 'You are no longer a member of this group.';
    if (this.leftNote.textContent !== note) this.leftNote.textContent = note;
  }

  /**
   * `aria-busy` on the log while many messages go in at once (opening a chat, a history page), so assistive
   * technology does not read each as news. It clears once the batch is laid out, or, while a page is still
   * loading, on a later render.
   */
  markBusy(loading) {
    cancelAnimationFrame(this.busyFrame);
    this.box.setAttribute('aria-busy', 'true');
    if (loading) return;
    this.busyFrame = requestAnimationFrame(() => {
      this.busyFrame = requestAnimationFrame(() => this.box.removeAttribute('aria-busy'));
    });
  }

  reset() {
    this.list.replaceChildren();
    this.items.clear();
    this.clearContext();
    this.hideError();
    this.closeMenu();
    this.search.close({ restoreFocus: false });
    this.stopTyping();
    this.input.value = '';
    this.autoGrow();
  }

  renderHeader(conv) {
    const store = this.store;
    const title = store.title(conv);
    this.title.textContent = title;
    this.encrypted.hidden = !conv.encrypted;
    // The server never reads an encrypted chat's files, so any type may go there.
    if (conv.encrypted) this.fileInput.removeAttribute('accept');
    else this.fileInput.accept = PLAIN_FILE_TYPES;
    // A 1:1's keys can be compared with the other user (a group's would be one comparison per member).
    const checkable = conv.encrypted && conv.kind === 'direct' && conv.verification;
    this.verifyState.textContent = checkable ? ` · ${conv.verification === 'verified' ? 'verified' : 'not verified'}` : '';
    this.verifyState.dataset.state = checkable ? conv.verification : '';
    this.verifyButton.hidden = !checkable || conv.verification === 'verified';
    this.avatar.className = `avatar ${hueClass(title)}${conv.kind === 'group' ? ' group' : ''}`;
    this.avatar.textContent = initial(title);
    const typing = typingText(store, conv);
    this.typing.hidden = !typing;
    this.typing.textContent = typing;
    let status = '';
    if (conv.kind === 'group') {
      status = conv.members.map((member) => (member === store.me.username ? 'you' : member)).join(', ');
    } else if (conv.peer) {
      const presence = store.presence.get(conv.peer);
      if (presence?.online) status = 'online';
      else if (presence?.lastSeenMs) status = formatLastSeen(presence.lastSeenMs);
      const dot = presence?.online ? h('span', { class: 'presence-dot' }) : null;
      if (dot) this.avatar.append(dot);
    }
    this.presence.textContent = status;
    this.typing.parentElement.classList.toggle('blank', !typing && !status);
    this.presence.dataset.online = String(Boolean(conv.peer && store.presence.get(conv.peer)?.online));
    this.groupButton.hidden = conv.kind !== 'group' || conv.left;
    this.search.showFor(conv);
  }

  renderMessages(conv, detail, switched) {
    const box = this.box;
    const atBottom = switched || box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
    const previousHeight = box.scrollHeight;
    const previousTop = box.scrollTop;
    const loading = conv.history === 'loading' || conv.loadingOlder;
    if (switched || detail.history || loading || box.hasAttribute('aria-busy')) this.markBusy(loading);

    const entries = this.entries(conv);
    const keep = new Set(entries.map((entry) => entry.key));
    for (const [key, item] of this.items) {
      if (!keep.has(key)) {
        item.remove();
        this.items.delete(key);
      }
    }
    entries.forEach((entry, index) => {
      let item = this.items.get(entry.key);
      if (!item) {
        item = entry.build();
        this.items.set(entry.key, item);
      } else if (item.signature !== entry.signature) {
        // In place: a replaced node would be read out again by the log (role=log announces added nodes).
        entry.update(item);
      }
      item.signature = entry.signature;
      if (entry.tick !== undefined) this.updateTick(item, entry.tick);
      if (this.list.children[index] !== item) this.list.insertBefore(item, this.list.children[index] ?? null);
    });

    if (conv.history === 'loading') this.historyStatus.textContent = 'Loading messages…';
    else if (conv.loadingOlder) this.historyStatus.textContent = 'Loading older messages…';
    else this.historyStatus.textContent = '';

    if (atBottom || detail.own) {
      box.scrollTop = box.scrollHeight;
    } else if (detail.history) {
      // Older messages went in above: keep what the reader was looking at in place.
      box.scrollTop = previousTop + (box.scrollHeight - previousHeight);
    }
    // A short first page may not fill the view, and then no scroll event would ever ask for more.
    if (conv.history === 'loaded' && conv.nextBefore !== null && box.scrollHeight <= box.clientHeight + NEAR_TOP_PX) {
      this.actions.loadOlder(conv);
    }
  }

  /**
   * The rows to show, each with a key, a signature that changes when it must be updated, a builder and an
   * updater (which changes the existing node in place).
   */
  entries(conv) {
    const store = this.store;
    const entries = [];
    let lastDay = null;
    let previous = null;
    // Expired ranges go where their events would have been: before the first message after them.
    const notes = store.expiredNotes(conv);
    let nextNote = 0;
    const notesBefore = (seq) => {
      for (; nextNote < notes.length && notes[nextNote].toSeq < seq; nextNote++) {
        const text = expiredText(notes[nextNote]);
        entries.push({
          key: `expired:${notes[nextNote].fromSeq}-${notes[nextNote].toSeq}`,
          signature: text,
          build: () => h('li', { class: 'system expired', dataset: { testid: 'expired-note' } }, text),
          update: setText(text),
        });
        previous = null;
      }
    };
    for (const msg of store.timeline(conv)) {
      notesBefore(msg.seq ?? Infinity);
      const day = dayKey(msg.ts_ms);
      if (day !== lastDay) {
        const label = formatDay(msg.ts_ms);
        entries.push({ key: `day:${day}`, signature: label, build: () => h('li', { class: 'day' }, label), update: setText(label) });
        lastDay = day;
        previous = null;
      }
      if (msg.kind === 'system') {
        const text = systemText(store, msg);
        entries.push({
          key: msg.uiKey,
          signature: text,
          build: () => h('li', { class: 'system', dataset: { testid: 'system-message' } }, text),
          update: setText(text),
        });
        previous = null;
        continue;
      }
      const shape = {
        continued: previous !== null && previous.from === msg.from,
        target: msg.target ? conv.messages.get(msg.target) ?? null : null,
        own: msg.from === store.me.username,
      };
      const { continued, target, own } = shape;
      const signature = [msg.version, msg.status, continued, conv.kind, target?.version ?? 0, target ? 1 : 0, msg.message_id].join('|');
      entries.push({
        key: msg.uiKey,
        signature,
        tick: own && msg.kind === 'text' && !msg.deleted ? store.tickState(conv, msg) : undefined,
        build: () => this.buildMessage(conv, msg, shape),
        update: (item) => this.fillMessage(item, conv, msg, shape),
      });
      previous = msg;
    }
    notesBefore(Infinity);
    return entries;
  }

  updateTick(item, state) {
    if (item.tick === state) return;
    const tick = item.querySelector('.ticks');
    if (!tick) return;
    item.tick = state;
    // The span stays (only its hidden icon changes): the log announces added nodes, and a tick is not news.
    setTick(tick, state);
    item.dataset.tick = state;
  }

  buildMessage(conv, msg, shape) {
    const item = h('li', { dataset: { testid: 'message' } });
    item.parts = {}; // part name -> the nodes in the bubble now
    item.cache = {}; // part name -> nodes built once and reused
    this.fillMessage(item, conv, msg, shape);
    return item;
  }

  /** Make a bubble show `msg`: parts come and go as needed, and what stays changes its text, not its node. */
  fillMessage(item, conv, msg, { continued, target, own }) {
    const store = this.store;
    const { cache } = item;
    item.msg = msg;
    item.conv = conv;
    item.className = `msg ${own ? 'out' : 'in'} ${continued ? 'continued' : 'first'}${msg.reactions.size ? ' has-reactions' : ''}`;
    Object.assign(item.dataset, {
      from: msg.from,
      messageId: msg.message_id ?? '',
      clientMsgId: msg.client_msg_id,
      status: msg.status,
      deleted: String(msg.deleted),
    });

    const showAuthor = !own && conv.kind === 'group' && !continued;
    place(item, 'author', showAuthor ? cache.author ??= h('span', { class: `msg-author author-${hueClass(msg.from)}` }, msg.from) : null);

    let quote = null;
    if (msg.target && !msg.deleted) {
      quote = cache.quote ??= h('span', { class: 'quote', dataset: { testid: 'quote' } },
        h('span', { class: 'quote-author' }, ''), '');
      const author = target ? (target.from === store.me.username ? 'You' : target.from) : '';
      const quoted = target ? previewText(store, { kind: 'direct' }, target) || '📎 Attachment' : 'A message not loaded yet';
      quote.firstChild.hidden = !author;
      setData(quote.firstChild.firstChild, author);
      setData(quote.lastChild, quoted);
    }
    place(item, 'quote', quote);

    const mediaKey = msg.media.map((media) => media.media_id).join(',');
    if (cache.mediaKey !== mediaKey) {
      cache.mediaKey = mediaKey;
      cache.media = msg.media.map((media) => this.buildMedia(media, msg));
    }
    place(item, 'media', msg.deleted ? null : cache.media);

    let text = null;
    if (msg.deleted) {
      text = cache.deleted ??= h('p', { class: 'msg-text deleted', dataset: { testid: 'message-text' } },
        icon('banned', 'deleted-icon'), 'This message was deleted');
    } else if (msg.text) {
      text = cache.text ??= h('p', { class: 'msg-text', dataset: { testid: 'message-text' } });
      if (cache.textShown !== msg.text) {
        cache.textShown = msg.text;
        text.replaceChildren(...linkified(msg.text));
      }
    }
    place(item, 'text', text);

    if (!cache.meta) {
      cache.edited = h('span', { class: 'edited', dataset: { testid: 'edited' } }, '');
      cache.time = h('time', {}, '');
      cache.meta = h('span', { class: 'msg-meta' }, cache.edited, cache.time);
    }
    setData(cache.edited.firstChild, msg.edited_ms && !msg.deleted ? 'edited' : '');
    cache.time.dateTime = new Date(msg.ts_ms).toISOString();
    setData(cache.time.firstChild, formatTime(msg.ts_ms));
    if (own && !msg.deleted && !cache.tick) {
      const state = store.tickState(conv, msg);
      cache.tick = tickElement(state);
      cache.meta.append(cache.tick);
      item.tick = state;
      item.dataset.tick = state;
    } else if (msg.deleted && cache.tick) {
      cache.tick.remove();
      cache.tick = null;
      item.tick = undefined;
      delete item.dataset.tick;
    }
    place(item, 'meta', cache.meta);

    let failed = null;
    if (msg.status === 'failed') {
      failed = cache.failed ??= h('span', { class: 'msg-failed' }, '',
        h('button', { type: 'button', class: 'link-button', onclick: () => this.actions.discard(item.conv, item.msg) }, 'Remove'));
      setData(failed.firstChild, `Not sent: ${msg.error ?? 'refused'} `);
    }
    place(item, 'failed', failed);

    let reactions = null;
    if (msg.reactions.size > 0) {
      reactions = cache.reactions ??= h('span', { class: 'reactions', dataset: { testid: 'reactions' }, role: 'img' }, '');
      const counts = new Map();
      for (const emoji of msg.reactions.values()) counts.set(emoji, (counts.get(emoji) ?? 0) + 1);
      const label = [...msg.reactions].map(([user, emoji]) => `${user === store.me.username ? 'you' : user} ${emoji}`).join(', ');
      reactions.setAttribute('aria-label', `Reactions: ${label}`);
      setData(reactions.firstChild, [...counts].map(([emoji, count]) => (count > 1 ? `${emoji}${count}` : emoji)).join(' '));
    }
    place(item, 'reactions', reactions);

    let menu = null;
    if (!msg.deleted) {
      // Present (disabled) while the message waits, so sending it does not add a node to the log.
      menu = cache.menu ??= h('button', {
        type: 'button',
        class: 'msg-menu-button',
        'aria-haspopup': 'menu',
        'aria-expanded': 'false',
        dataset: { testid: 'message-options' },
        onclick: (event) => this.openMenu(item.conv, item.msg, event.currentTarget),
      }, '⌄');
      menu.disabled = msg.status !== 'sent';
      menu.setAttribute('aria-label', `Message options (${msg.from}, ${formatTime(msg.ts_ms)})`);
    }
    place(item, 'menu', menu);
  }

  buildMedia(media, msg) {
    const isImage = media.content_type.startsWith('image/');
    if (isImage && media.thumbnail) {
      const [width, height] = fit(media.width, media.height);
      const img = h('img', { width, height, dataset: { testid: 'thumbnail' } });
      this.loadThumbnail(img, media.media_id, `Photo from ${msg.from}`);
      return h('button', {
        type: 'button',
        class: 'thumb',
        'aria-label': `Open photo from ${msg.from}`,
        onclick: () => this.actions.openImage(media, msg),
      }, img);
    }
    const name = mediaName(media);
    return h('a', {
      class: 'file-link',
      href: `/v1/media/${media.media_id}`,
      download: name,
      dataset: { testid: 'file-link' },
      onclick: (event) => {
        event.preventDefault();
        this.actions.download(media, name);
      },
    }, h('span', { class: 'file-icon', 'aria-hidden': 'true' }, '📄'),
    h('span', {}, h('span', { class: 'file-name' }, name), ' ', h('span', { class: 'file-size' }, formatBytes(media.size_bytes))));
  }

  /** Fetch a thumbnail into `img`; one the server could not be asked for is kept for `retryThumbnails`. */
  loadThumbnail(img, mediaId, alt) {
    img.alt = alt;
    this.actions.thumbnailUrl(mediaId).then((url) => {
      img.src = url;
    }, (err) => {
      img.alt = 'The photo could not be loaded';
      // A refusal (gone, not allowed) would be refused again; a network failure may not be.
      if (!(err instanceof ApiError) || err.transient) this.failedThumbnails.set(img, () => this.loadThumbnail(img, mediaId, alt));
    });
  }

  /** The connection is back: thumbnails that failed while the server was away are fetched again, if still shown. */
  retryThumbnails() {
    const failed = [...this.failedThumbnails];
    this.failedThumbnails.clear();
    for (const [img, retry] of failed) {
      if (img.isConnected) retry();
    }
  }

  /** Bring a loaded message into view and flash it, for a search result; false when it is not loaded here. */
  reveal(messageId) {
    const item = [...this.items.values()].find((node) => node.msg?.message_id === messageId);
    if (!item) return false;
    item.scrollIntoView({ block: 'center' });
    clearTimeout(item.foundTimer);
    // Off and on again, so a second click on the same result flashes it anew.
    delete item.dataset.found;
    void item.offsetWidth;
    item.dataset.found = 'true';
    item.foundTimer = setTimeout(() => delete item.dataset.found, FOUND_MS);
    return true;
  }

  // ---- history paging ------------------------------------------------------------

  maybeLoadOlder() {
    const conv = this.current();
    if (conv && this.box.scrollTop < NEAR_TOP_PX && conv.nextBefore !== null && conv.history === 'loaded') {
      this.actions.loadOlder(conv);
    }
  }

  // ---- composing -----------------------------------------------------------------

  /**
   * Fit the box to its text, up to 140 px. An empty or hidden box (a chat being switched to, or one closed to
   * writing) is left to the stylesheet: a hidden textarea's scrollHeight is 0, which would pin it at its padding.
   */
  autoGrow() {
    this.input.style.height = '';
    if (!this.input.value || this.input.scrollHeight === 0) return;
    this.input.style.height = `${Math.min(this.input.scrollHeight, 140)}px`;
  }

  submit() {
    const conv = this.current();
    if (!conv || conv.left || conv.missing) return;
    const text = this.input.value;
    if (!text.trim()) return;
    this.hideError();
    const tooLong = textTooLong(text);
    if (tooLong) {
      // Kept in the composer, to shorten.
      this.showError(tooLong);
      return;
    }
    if (this.context?.mode === 'edit') {
      this.actions.edit(conv, this.context.msg, text.trim());
    } else {
      this.actions.send(conv, text, { replyTo: this.context?.mode === 'reply' ? this.context.msg.message_id : null });
    }
    this.input.value = '';
    this.autoGrow();
    this.clearContext();
    this.stopTyping();
    this.input.focus();
  }

  setContext(mode, msg) {
    this.context = { mode, msg };
    $('#compose-context-title').textContent = mode === 'edit'
      ? 'Edit message'
      : `Replying to ${msg.from === this.store.me.username ? 'yourself' : msg.from}`;
    $('#compose-context-body').textContent = previewText(this.store, { kind: 'direct' }, msg) || '📎 Attachment';
    $('#compose-context-cancel').setAttribute('aria-label', mode === 'edit' ? 'Cancel editing' : 'Cancel reply');
    this.contextBar.hidden = false;
    if (mode === 'edit') {
      this.input.value = msg.text;
      this.autoGrow();
    }
    this.input.focus();
  }

  clearContext() {
    if (this.context?.mode === 'edit') this.input.value = '';
    this.context = null;
    this.contextBar.hidden = true;
  }

  noteTyping() {
    const conv = this.current();
    if (!conv || conv.id === null) return;
    clearTimeout(this.typingIdleTimer);
    if (!this.input.value.trim()) {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (now - this.typingSentAt > TYPING_REFRESH_MS) {
      this.typingSentAt = now;
      this.typingConv = conv;
      this.actions.typing(conv, 'start');
    }
    this.typingIdleTimer = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  stopTyping() {
    clearTimeout(this.typingIdleTimer);
    if (this.typingSentAt && this.typingConv) this.actions.typing(this.typingConv, 'stop');
    this.typingSentAt = 0;
    this.typingConv = null;
  }

  showError(message) {
    this.error.textContent = message;
    this.error.hidden = false;
  }

  hideError() {
    this.error.hidden = true;
    this.error.textContent = '';
  }

  /**
   * A file picked, pasted or dropped: nothing goes until the user has seen it and pressed Send in the preview,
   * which takes over the compose box's text as the caption. A file the server is sure to refuse is refused here.
   */
  async offerFile(file) {
    const conv = this.current();
    if (!conv || conv.left || conv.missing) return;
    this.hideError();
    if (this.upload) {
      this.showError('Wait for the current upload to finish.');
      return;
    }
    const problem = this.actions.fileProblem(file, conv);
    if (problem) {
      this.showError(`“${file.name}” was not sent. ${describeError(problem)}`);
      return;
    }
    // While editing, the compose box holds the message being edited, which is no caption.
    const editing = this.context?.mode === 'edit';
    const caption = await this.attachDialog.open(file, editing ? '' : this.input.value);
    if (caption === null) {
      this.focusComposer();
      return;
    }
    if (!editing) {
      this.input.value = '';
      this.autoGrow();
      this.stopTyping();
    }
    const replyTo = this.context?.mode === 'reply' ? this.context.msg.message_id : null;
    if (replyTo) this.clearContext();
    this.focusComposer();
    await this.sendFile(conv, file, caption, replyTo);
  }

  async sendFile(conv, file, caption, replyTo) {
    if (this.upload) {
      this.showError(`“${file.name}” was not sent. Wait for the current upload to finish.`);
      return;
    }
    this.uploadLabel.textContent = `Uploading ${file.name}…`;
    this.uploadProgress.value = 0;
    this.uploadStatus.hidden = false;
    try {
      this.upload = this.actions.upload(file, (fraction) => {
        this.uploadProgress.value = fraction;
      }, conv);
      const media = await this.upload.promise;
      // The chat may have been given its server id meanwhile (a first message to someone).
      this.actions.send(this.store.get(conv.key) ?? conv, caption.trim() ? caption : '', { replyTo, media: [media] });
    } catch (err) {
      if (err.code !== 'aborted') this.showError(`“${file.name}” was not sent. ${describeError(err)}`);
      // The caption is not lost with the file: back in the compose box, unless something else was written since.
      if (caption.trim() && !this.input.value && this.current() === conv && !this.context) {
        this.input.value = caption;
        this.autoGrow();
      }
    } finally {
      this.upload = null;
      this.uploadStatus.hidden = true;
    }
  }

  focusComposer() {
    if (!this.composer.hidden) this.input.focus();
  }

  // ---- message menu ---------------------------------------------------------------

  openMenu(conv, msg, button) {
    if (this.menuFor?.button === button && !this.menu.hidden) {
      this.closeMenu();
      return;
    }
    this.closeMenu();
    const store = this.store;
    const own = msg.from === store.me.username;
    const mine = msg.reactions.get(store.me.username) ?? null;
    const act = (fn) => () => {
      this.closeMenu({ restoreFocus: false });
      fn();
    };
    // Reactions and edits would travel in the clear, which an encrypted chat refuses: not offered there (yet).
    const sealed = Boolean(conv.encrypted);
    const items = [
      !sealed && h('div', { class: 'menu-reactions', role: 'group', 'aria-label': 'React' },
        REACTIONS.map((emoji) => h('button', {
          type: 'button',
          role: 'menuitemcheckbox',
          'aria-checked': String(mine === emoji),
          'aria-label': mine === emoji ? `Remove reaction ${emoji}` : `React with ${emoji}`,
          onclick: act(() => this.actions.react(conv, msg, mine === emoji ? null : emoji)),
        }, emoji))),
      h('button', { type: 'button', role: 'menuitem', class: 'menu-item', onclick: act(() => this.setContext('reply', msg)) }, 'Reply'),
    ].filter(Boolean);
    if (msg.text) {
      // Closed first, so the focus goes back to the options button; the click still counts as the user's gesture.
      items.push(h('button', {
        type: 'button', role: 'menuitem', class: 'menu-item',
        onclick: () => {
          this.closeMenu();
          this.actions.copy(msg.text);
        },
      }, 'Copy'));
    }
    if (own && !sealed && msg.text && Date.now() - msg.ts_ms < EDIT_WINDOW_MS) {
      items.push(h('button', { type: 'button', role: 'menuitem', class: 'menu-item', onclick: act(() => this.setContext('edit', msg)) }, 'Edit'));
    }
    if (own) {
      items.push(h('button', {
        type: 'button', role: 'menuitem', class: 'menu-item danger-text',
        onclick: act(() => this.actions.remove(conv, msg)),
      }, 'Delete for everyone'));
    }
    this.menu.replaceChildren(...items);
    this.menu.hidden = false;
    this.menuFor = { button, msg, scrollTop: this.box.scrollTop };
    button.setAttribute('aria-expanded', 'true');
    this.placeMenu(button.closest('.msg') ?? button);
    this.menuItems()[0]?.focus();
  }

  /**
   * Put the menu next to its bubble, never over it: the message is what the user is deciding about. Beside it on
   * the side the bubble leaves free, else below or above it; always inside the viewport. A bubble too tall for any
   * of these gets the spot that hides the least of it.
   */
  placeMenu(bubble) {
    const box = bubble.getBoundingClientRect();
    const width = this.menu.offsetWidth;
    const height = this.menu.offsetHeight;
    const maxLeft = window.innerWidth - width - MENU_MARGIN_PX;
    const maxTop = window.innerHeight - height - MENU_MARGIN_PX;
    const clamp = (value, max) => Math.max(MENU_MARGIN_PX, Math.min(value, max));
    // Lined up with the bubble's own edge: the left one for a received message, the right one for ours.
    const alignedLeft = clamp(bubble.classList.contains('out') ? box.right - width : box.left, maxLeft);
    const spots = [
      bubble.classList.contains('out')
        ? { left: box.left - MENU_GAP_PX - width, top: clamp(box.top, maxTop) }
        : { left: box.right + MENU_GAP_PX, top: clamp(box.top, maxTop) },
      { left: alignedLeft, top: box.bottom + MENU_GAP_PX },
      { left: alignedLeft, top: box.top - MENU_GAP_PX - height },
    ];
    const inside = (spot) => spot.left >= MENU_MARGIN_PX && spot.left <= maxLeft && spot.top >= MENU_MARGIN_PX && spot.top <= maxTop;
    const covered = (spot) => Math.max(0, Math.min(spot.left + width, box.right) - Math.max(spot.left, box.left))
      * Math.max(0, Math.min(spot.top + height, box.bottom) - Math.max(spot.top, box.top));
    let spot = spots.find(inside);
    if (!spot) {
      const clamped = spots.slice(1).map((candidate) => ({ left: candidate.left, top: clamp(candidate.top, maxTop) }));
      spot = clamped.reduce((best, candidate) => (covered(candidate) < covered(best) ? candidate : best));
    }
    this.menu.style.left = `${Math.round(spot.left)}px`;
    this.menu.style.top = `${Math.round(spot.top)}px`;
  }

  menuItems() {
    return [...this.menu.querySelectorAll('button')];
  }

  menuKey(event) {
    const items = this.menuItems();
    const index = items.indexOf(document.activeElement);
    if (event.key === 'Escape') {
      event.preventDefault();
      this.closeMenu();
    } else if (event.key === 'ArrowDown' || event.key === 'ArrowRight') {
      event.preventDefault();
      items[(index + 1) % items.length]?.focus();
    } else if (event.key === 'ArrowUp' || event.key === 'ArrowLeft') {
      event.preventDefault();
      items[(index - 1 + items.length) % items.length]?.focus();
    } else if (event.key === 'Tab') {
      this.closeMenu();
    }
  }

  closeMenu({ restoreFocus = true } = {}) {
    if (this.menu.hidden) return;
    this.menu.hidden = true;
    this.menu.replaceChildren();
    const button = this.menuFor?.button;
    this.menuFor = null;
    if (button) {
      button.setAttribute('aria-expanded', 'false');
      if (restoreFocus && button.isConnected) button.focus();
    }
  }
}

/** Put a bubble's part in its place (or take it out); nodes that stay are not touched. */
function place(item, name, nodes) {
  const next = nodes === null ? [] : [].concat(nodes);
  const current = item.parts[name] ?? [];
  if (current.length === next.length && current.every((node, index) => node === next[index])) return;
  for (const node of current) {
    if (!next.includes(node)) node.remove();
  }
  let anchor = null;
  for (const later of PARTS.slice(PARTS.indexOf(name) + 1)) {
    anchor = item.parts[later]?.[0] ?? null;
    if (anchor) break;
  }
  for (const node of next) {
    if (!current.includes(node)) item.insertBefore(node, anchor);
  }
  item.parts[name] = next;
}

/** Change a text node's text only if it differs (a text change, not an added node, for the live region). */
const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"]+/gi;
const TRAILING_PUNCTUATION = '.,;:!?\'"]}';

/**
 * The text as nodes, each http(s) address in it a link that opens apart from the app, with no access back to
 * it (noopener) and no referrer. Only http and https become links: a `javascript:` or `data:` text stays text.
 * Punctuation that ends a sentence, and a closing parenthesis the address did not open, stay outside the link.
 */
function linkified(text) {
  const nodes = [];
  let at = 0;
  for (const match of text.matchAll(URL_IN_TEXT)) {
    let url = match[0];
    for (;;) {
      const last = url.at(-1);
      const unbalanced = last === ')' && url.split('(').length < url.split(')').length;
      if (!TRAILING_PUNCTUATION.includes(last) && !unbalanced) break;
      url = url.slice(0, -1);
    }
    if (match.index > at) nodes.push(document.createTextNode(text.slice(at, match.index)));
    nodes.push(h('a', {
      href: url, target: '_blank', rel: 'noopener noreferrer', class: 'msg-link', dataset: { testid: 'message-link' },
    }, url));
    at = match.index + url.length;
  }
  if (at < text.length || nodes.length === 0) nodes.push(document.createTextNode(text.slice(at)));
  return nodes;
}

function setData(node, text) {
  if (node.data !== text) node.data = text;
}

function setText(text) {
  return (item) => setData(item.firstChild, text);
}

function fit(width, height) {
  if (!width || !height) return [THUMB_EDGE_PX, THUMB_EDGE_PX * 0.75];
  const scale = Math.min(1, THUMB_EDGE_PX / width, THUMB_EDGE_PX / height);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

const EXTENSIONS = {
  'image/jpeg': 'jpg', 'image/png': 'png', 'image/gif': 'gif', 'image/webp': 'webp', 'video/mp4': 'mp4',
  'video/webm': 'webm', 'audio/mpeg': 'mp3', 'audio/ogg': 'ogg', 'audio/wav': 'wav', 'application/pdf': 'pdf',
};

/** The name the file was sent under; for media sent without one, a name made of its type and id. */
export function mediaName(media) {
  if (media.filename) return media.filename;
  const extension = EXTENSIONS[media.content_type] ?? media.content_type.split('/').pop()?.replace(/[^a-z0-9]/gi, '') ?? 'bin';
  return `missive-${media.media_id.slice(0, 8)}.${extension}`;
}

// The open chat: header (title, presence, typing), the message log with
// history paging, the per-message menu (reply, react, edit, delete) and the
// composer with attachments.

import { h, $, formatTime, formatDay, dayKey, formatLastSeen, formatBytes, initial, hueClass, describeError } from './dom.js';
import { systemText, previewText, typingText } from './list.js';
import { icon, tickElement, setTick } from './icons.js';

const REACTIONS = ['👍', '❤️', '😂', '😮', '😢', '🙏'];
const EDIT_WINDOW_MS = 15 * 60 * 1000; // delivery.edit_window_secs; the server has the last word
const TYPING_REFRESH_MS = 3000; // the server lets an indication lapse after 6 s
const TYPING_IDLE_MS = 4000;
const NEAR_TOP_PX = 150;
const NEAR_BOTTOM_PX = 80;
const THUMB_EDGE_PX = 320;


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

    this.empty = $('#chat-empty');
    this.main = $('#chat-main');
    this.title = $('#chat-title');
    this.avatar = $('#chat-avatar');
    this.typing = $('#chat-typing');
    this.presence = $('#chat-presence');
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

    this.box.setAttribute('aria-relevant', 'additions');
    this.bind();
  }

  bind() {
    $('#back-button').addEventListener('click', () => this.actions.back());
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
      if (file) this.sendFile(file);
    });
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
    const left = conv.left;
    this.composer.hidden = left;
    this.leftNote.hidden = !left;
  }

  reset() {
    this.list.replaceChildren();
    this.items.clear();
    this.clearContext();
    this.hideError();
    this.closeMenu();
    this.stopTyping();
    this.input.value = '';
    this.autoGrow();
  }

  renderHeader(conv) {
    const store = this.store;
    const title = store.title(conv);
    this.title.textContent = title;
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
  }

  renderMessages(conv, detail, switched) {
    const box = this.box;
    const atBottom = switched || box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
    const previousHeight = box.scrollHeight;
    const previousTop = box.scrollTop;

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
      if (!item || item.signature !== entry.signature) {
        const fresh = entry.build();
        fresh.signature = entry.signature;
        if (item) {
          const hadFocus = item.contains(document.activeElement);
          item.replaceWith(fresh);
          if (hadFocus) fresh.querySelector('button, a')?.focus();
        }
        this.items.set(entry.key, fresh);
        item = fresh;
      }
      if (entry.tick !== undefined && item.tick !== entry.tick) this.updateTick(item, entry.tick);
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

  /** The rows to show, each with a key, a signature that changes when it must be rebuilt, and a builder. */
  entries(conv) {
    const store = this.store;
    const entries = [];
    let lastDay = null;
    let previous = null;
    for (const msg of store.timeline(conv)) {
      const day = dayKey(msg.ts_ms);
      if (day !== lastDay) {
        const label = formatDay(msg.ts_ms);
        entries.push({ key: `day:${day}`, signature: label, build: () => h('li', { class: 'day' }, label) });
        lastDay = day;
        previous = null;
      }
      if (msg.kind === 'system') {
        const text = systemText(store, msg);
        entries.push({
          key: msg.uiKey,
          signature: text,
          build: () => h('li', { class: 'system', dataset: { testid: 'system-message' } }, text),
        });
        previous = null;
        continue;
      }
      const continued = previous !== null && previous.from === msg.from;
      const target = msg.target ? conv.messages.get(msg.target) ?? null : null;
      const own = msg.from === store.me.username;
      const signature = [msg.version, msg.status, continued, target?.version ?? 0, target ? 1 : 0, msg.message_id].join('|');
      entries.push({
        key: msg.uiKey,
        signature,
        tick: own && msg.kind === 'text' && !msg.deleted ? store.tickState(conv, msg) : undefined,
        build: () => this.buildMessage(conv, msg, { continued, target, own }),
      });
      previous = msg;
    }
    return entries;
  }

  updateTick(item, state) {
    item.tick = state;
    const tick = item.querySelector('.ticks');
    if (!tick) return;
    // The span stays (only its hidden icon changes): the log announces added nodes, and a tick is not news.
    setTick(tick, state);
    item.dataset.tick = state;
  }

  buildMessage(conv, msg, { continued, target, own }) {
    const store = this.store;
    const item = h('li', {
      class: `msg ${own ? 'out' : 'in'} ${continued ? 'continued' : 'first'}${msg.reactions.size ? ' has-reactions' : ''}`,
      dataset: {
        testid: 'message',
        from: msg.from,
        messageId: msg.message_id ?? '',
        clientMsgId: msg.client_msg_id,
        status: msg.status,
        deleted: String(msg.deleted),
      },
    });
    if (!own && conv.kind === 'group' && !continued) {
      item.append(h('span', { class: `msg-author author-${hueClass(msg.from)}` }, msg.from));
    }
    if (msg.target && !msg.deleted) {
      const quoted = target ? previewText(store, { kind: 'direct' }, target) : 'A message not loaded yet';
      const author = target ? (target.from === store.me.username ? 'You' : target.from) : '';
      item.append(h('span', { class: 'quote', dataset: { testid: 'quote' } },
        author ? h('span', { class: 'quote-author' }, author) : null, quoted || '📎 Attachment'));
    }
    for (const media of msg.deleted ? [] : msg.media) item.append(this.buildMedia(media, msg));
    if (msg.deleted) {
      item.append(h('p', { class: 'msg-text deleted', dataset: { testid: 'message-text' } },
        icon('banned', 'deleted-icon'), 'This message was deleted'));
    } else if (msg.text) {
      item.append(h('p', { class: 'msg-text', dataset: { testid: 'message-text' } }, msg.text));
    }
    const meta = h('span', { class: 'msg-meta' },
      msg.edited_ms && !msg.deleted ? h('span', { class: 'edited', dataset: { testid: 'edited' } }, 'edited') : null,
      h('time', { datetime: new Date(msg.ts_ms).toISOString() }, formatTime(msg.ts_ms)));
    if (own && !msg.deleted) {
      const state = store.tickState(conv, msg);
      meta.append(tickElement(state));
      item.tick = state;
      item.dataset.tick = state;
    }
    item.append(meta);
    if (msg.status === 'failed') {
      item.append(h('span', { class: 'msg-failed' }, `Not sent: ${msg.error ?? 'refused'} `,
        h('button', { type: 'button', class: 'link-button', onclick: () => this.actions.discard(conv, msg) }, 'Remove')));
    }
    if (msg.reactions.size > 0) {
      const counts = new Map();
      for (const emoji of msg.reactions.values()) counts.set(emoji, (counts.get(emoji) ?? 0) + 1);
      const label = [...msg.reactions].map(([user, emoji]) => `${user === store.me.username ? 'you' : user} ${emoji}`).join(', ');
      item.append(h('span', { class: 'reactions', dataset: { testid: 'reactions' }, 'aria-label': `Reactions: ${label}`, role: 'img' },
        [...counts].map(([emoji, count]) => (count > 1 ? `${emoji}${count}` : emoji)).join(' ')));
    }
    if (msg.status === 'sent' && !msg.deleted) {
      const button = h('button', {
        type: 'button',
        class: 'msg-menu-button',
        'aria-label': `Message options (${msg.from}, ${formatTime(msg.ts_ms)})`,
        'aria-haspopup': 'menu',
        'aria-expanded': 'false',
        dataset: { testid: 'message-options' },
      }, '⌄');
      button.addEventListener('click', () => this.openMenu(conv, msg, button));
      item.append(button);
    }
    return item;
  }

  buildMedia(media, msg) {
    const isImage = media.content_type.startsWith('image/');
    if (isImage && media.thumbnail) {
      const [width, height] = fit(media.width, media.height);
      const img = h('img', { alt: `Photo from ${msg.from}`, width, height, dataset: { testid: 'thumbnail' } });
      this.actions.mediaUrl(media.media_id, true).then((url) => {
        img.src = url;
      }, () => {
        img.alt = 'The photo could not be loaded';
      });
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

  // ---- history paging ------------------------------------------------------------

  maybeLoadOlder() {
    const conv = this.current();
    if (conv && this.box.scrollTop < NEAR_TOP_PX && conv.nextBefore !== null && conv.history === 'loaded') {
      this.actions.loadOlder(conv);
    }
  }

  // ---- composing -----------------------------------------------------------------

  autoGrow() {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 140)}px`;
  }

  submit() {
    const conv = this.current();
    if (!conv || conv.left) return;
    const text = this.input.value;
    if (!text.trim()) return;
    this.hideError();
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

  async sendFile(file) {
    const conv = this.current();
    if (!conv || conv.left) return;
    this.hideError();
    if (this.upload) {
      this.showError('Wait for the current upload to finish.');
      return;
    }
    this.uploadLabel.textContent = `Uploading ${file.name}…`;
    this.uploadProgress.value = 0;
    this.uploadStatus.hidden = false;
    try {
      this.upload = this.actions.upload(file, (fraction) => {
        this.uploadProgress.value = fraction;
      });
      const media = await this.upload.promise;
      const caption = this.context?.mode === 'edit' ? '' : this.input.value;
      const replyTo = this.context?.mode === 'reply' ? this.context.msg.message_id : null;
      if (caption.trim()) {
        this.input.value = '';
        this.autoGrow();
      }
      this.clearContext();
      this.actions.send(this.store.get(conv.key) ?? conv, caption.trim() ? caption : '', { replyTo, media: [media] });
    } catch (err) {
      if (err.code !== 'aborted') this.showError(`“${file.name}” was not sent. ${describeError(err)}`);
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
    const items = [
      h('div', { class: 'menu-reactions', role: 'group', 'aria-label': 'React' },
        REACTIONS.map((emoji) => h('button', {
          type: 'button',
          role: 'menuitemcheckbox',
          'aria-checked': String(mine === emoji),
          'aria-label': mine === emoji ? `Remove reaction ${emoji}` : `React with ${emoji}`,
          onclick: act(() => this.actions.react(conv, msg, mine === emoji ? null : emoji)),
        }, emoji))),
      h('button', { type: 'button', role: 'menuitem', class: 'menu-item', onclick: act(() => this.setContext('reply', msg)) }, 'Reply'),
    ];
    if (own && msg.text && Date.now() - msg.ts_ms < EDIT_WINDOW_MS) {
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
    const anchor = button.getBoundingClientRect();
    const width = this.menu.offsetWidth;
    const height = this.menu.offsetHeight;
    const left = Math.max(8, Math.min(anchor.right - width, window.innerWidth - width - 8));
    const below = anchor.bottom + 4;
    const top = below + height > window.innerHeight - 8 ? Math.max(8, anchor.top - height - 4) : below;
    this.menu.style.left = `${left}px`;
    this.menu.style.top = `${top}px`;
    this.menuItems()[0]?.focus();
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

function fit(width, height) {
  if (!width || !height) return [THUMB_EDGE_PX, THUMB_EDGE_PX * 0.75];
  const scale = Math.min(1, THUMB_EDGE_PX / width, THUMB_EDGE_PX / height);
  return [Math.max(1, Math.round(width * scale)), Math.max(1, Math.round(height * scale))];
}

const EXTENSIONS = {
  'image/jpeg': 'jpg', 'image/png': 'png', 'image/gif': 'gif', 'image/webp': 'webp', 'video/mp4': 'mp4',
  'video/webm': 'webm', 'audio/mpeg': 'mp3', 'audio/ogg': 'ogg', 'audio/wav': 'wav', 'application/pdf': 'pdf',
};

/** The protocol keeps no file names, so a download is named after its type and id. */
export function mediaName(media) {
  const extension = EXTENSIONS[media.content_type] ?? media.content_type.split('/').pop()?.replace(/[^a-z0-9]/gi, '') ?? 'bin';
  return `missive-${media.media_id.slice(0, 8)}.${extension}`;
}

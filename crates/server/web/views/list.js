// The conversation list: one button per chat, most recent activity first,
// with the last message, unread count, typing and presence.

import { h, $, formatListTime, initial, hueClass } from './dom.js';
import { tickElement } from './icons.js';

const TIMER_NAMES = { 3600: '1 hour', 86400: '1 day', 604800: '7 days', 7776000: '90 days' };

export function systemText(store, msg) {
  const event = msg.event ?? {};
  const who = (user) => (user === store.me.username ? 'you' : user);
  const actor = event.actor === store.me.username ? 'You' : event.actor ?? msg.from;
  const users = (event.users ?? []).map(who).join(', ');
  switch (event.action) {
    case 'created': return `${actor} created group “${event.name ?? ''}”`;
    case 'added': return `${actor} added ${users}`;
    case 'removed': return `${actor} removed ${users}`;
    case 'left': return `${actor} left`;
    case 'promoted': return `${actor} made ${users} admin`;
    case 'demoted': return `${actor} dismissed ${users} as admin`;
    case 'renamed': return `${actor} renamed the group to “${event.name ?? ''}”`;
    case 'encrypted': return `🔒 ${actor} turned on end-to-end encryption`;
    case 'timer': return event.secs
      ? `⏱ ${actor} set messages to disappear after ${TIMER_NAMES[event.secs] ?? `${event.secs} s`}`
      : `⏱ ${actor} turned off disappearing messages`;
    default: return 'The group changed';
  }
}

export function previewText(store, conv, msg) {
  if (!msg) return '';
  if (msg.kind === 'system') return systemText(store, msg);
  if (msg.deleted) return 'This message was deleted';
  const prefix = conv.kind === 'group' && msg.from !== store.me.username ? `${msg.from}: ` : '';
  if (msg.media.length > 0 && !msg.text) {
    return prefix + (msg.media[0].content_type.startsWith('image/') ? '📷 Photo' : `📎 ${msg.media[0].filename ?? 'File'}`);
  }
  return prefix + msg.text;
}

export function typingText(store, conv) {
  const typers = store.typers(conv);
  if (typers.length === 0) return '';
  if (conv.kind !== 'group') return 'typing…';
  return typers.length === 1 ? `${typers[0]} is typing…` : `${typers.join(', ')} are typing…`;
}

export class ListView {
  constructor(store, { onOpen }) {
    this.store = store;
    this.onOpen = onOpen;
    this.list = $('#conversation-list');
    this.empty = $('#conversation-empty');
    this.noMatch = $('#conversation-no-match');
    this.search = $('#conversation-search');
    this.items = new Map(); // conversation key -> <li>
    this.search.addEventListener('input', () => this.render());
    this.search.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape' || !this.search.value) return;
      event.preventDefault();
      this.search.value = '';
      this.render();
    });
  }

  /** What is typed in the search field, in the case it is compared in; empty when not searching. */
  query() {
    return this.search.value.trim().toLocaleLowerCase();
  }

  /** Whether a chat's title or its last message's text (or file name) contains `query`. */
  matches(conv, query) {
    const last = this.store.lastShown(conv);
    const texts = [this.store.title(conv)];
    if (last?.kind === 'text' && !last.deleted) {
      texts.push(last.text ?? '', ...last.media.map((media) => media.filename ?? ''));
    }
    return texts.some((text) => text.toLocaleLowerCase().includes(query));
  }

  render() {
    const store = this.store;
    const all = store.sorted()
      .filter((conv) => !conv.missing && (conv.id !== null || conv.messages.size > 0 || conv.key === store.openKey));
    const query = this.query();
    const convs = query ? all.filter((conv) => this.matches(conv, query)) : all;
    const keep = new Set(convs.map((conv) => conv.key));
    for (const [key, item] of this.items) {
      if (!keep.has(key)) {
        item.remove();
        this.items.delete(key);
      }
    }
    convs.forEach((conv, index) => {
      let item = this.items.get(conv.key);
      if (!item) {
        const button = h('button', { type: 'button', class: 'conv', dataset: { testid: 'conversation' } });
        button.addEventListener('click', () => this.onOpen(button.dataset.key));
        item = h('li', {}, button);
        this.items.set(conv.key, item);
      }
      this.fill(item.firstChild, conv);
      // Move only what is out of place: moving a node would take the keyboard focus off it.
      if (this.list.children[index] !== item) this.list.insertBefore(item, this.list.children[index] ?? null);
    });
    this.empty.hidden = all.length > 0 || Boolean(query);
    this.noMatch.hidden = !query || convs.length > 0;
  }

  fill(button, conv) {
    const store = this.store;
    const title = store.title(conv);
    const last = store.lastShown(conv);
    const typing = typingText(store, conv);
    const presence = conv.kind === 'direct' ? store.presence.get(conv.peer) : null;
    button.dataset.key = conv.key;
    button.dataset.title = title;
    button.dataset.unread = String(conv.unread);
    button.classList.toggle('has-unread', conv.unread > 0);
    if (store.openKey === conv.key) button.setAttribute('aria-current', 'true');
    else button.removeAttribute('aria-current');

    const labelParts = [title];
    if (presence?.online) labelParts.push('online');
    if (conv.unread > 0) labelParts.push(`${conv.unread} unread`);
    if (typing) labelParts.push(typing);
    else if (last) labelParts.push(previewText(store, conv, last));
    button.setAttribute('aria-label', labelParts.join(', '));

    const avatar = h('span', { class: `avatar ${hueClass(title)}${conv.kind === 'group' ? ' group' : ''}`, 'aria-hidden': 'true' },
      initial(title),
      presence?.online ? h('span', { class: 'presence-dot', dataset: { testid: 'presence-dot' } }) : null);
    const own = last && last.kind === 'text' && last.from === store.me.username && !last.deleted;
    const preview = typing
      ? h('span', { class: 'conv-preview typing' }, typing)
      : h('span', { class: 'conv-preview', dataset: { testid: 'conversation-preview' } },
        own ? tickElement(store.tickState(conv, last)) : null, own ? ' ' : null, previewText(store, conv, last));
    button.replaceChildren(
      avatar,
      h('span', { class: 'conv-body' },
        h('span', { class: 'conv-row' },
          h('span', { class: 'conv-title' }, title),
          h('span', { class: 'conv-time' }, last ? formatListTime(last.ts_ms) : '')),
        h('span', { class: 'conv-row' },
          preview,
          conv.unread > 0 ? h('span', { class: 'badge', dataset: { testid: 'unread-badge' } }, String(conv.unread)) : null)),
    );
  }

  focus(key) {
    this.items.get(key)?.firstChild.focus();
  }
}

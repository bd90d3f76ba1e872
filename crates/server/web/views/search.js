// Search within the open chat: the server looks through the whole visible history (`?q=`), far beyond the
// pages loaded here, so the results are a list of their own; one that is loaded can be shown in the chat.

import { h, $, formatDateTime, describeError } from './dom.js';
import { utf8Bytes } from '../api.js';

// The server takes queries of 1-256 bytes.
const QUERY_BYTES_MAX = 256;
// A result shows this much of a long text, around its first match.
const SNIPPET_CHARS = 160;
const SNIPPET_LEAD_CHARS = 40;

function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Cut `text` to about SNIPPET_CHARS around `index`, saying with "…" where something was left out. */
function snippet(text, index) {
  if (text.length <= SNIPPET_CHARS) return text;
  let start = Math.max(0, Math.min(index - SNIPPET_LEAD_CHARS, text.length - SNIPPET_CHARS));
  // Not between the two halves of a surrogate pair (an emoji, say).
  if (/[\uDC00-\uDFFF]/.test(text.charAt(start))) start += 1;
  let end = Math.min(text.length, start + SNIPPET_CHARS);
  if (/[\uDC00-\uDFFF]/.test(text.charAt(end))) end += 1;
  return `${start > 0 ? '…' : ''}${text.slice(start, end)}${end < text.length ? '…' : ''}`;
}

/**
 * `text` as nodes, each occurrence of `query` (any case) in a <mark>. Text nodes only: what someone wrote never
 * becomes markup. The server's matching has the last word; a text it found for a reason this cannot see (a
 * finer case folding) is shown without marks.
 */
export function highlighted(text, query) {
  const pattern = new RegExp(escapeRegExp(query), 'giu');
  const first = text.search(pattern);
  const shown = first < 0 ? text : snippet(text, first);
  const nodes = [];
  let at = 0;
  for (const match of shown.matchAll(pattern)) {
    if (match[0].length === 0) break;
    if (match.index > at) nodes.push(document.createTextNode(shown.slice(at, match.index)));
    nodes.push(h('mark', {}, match[0]));
    at = match.index + match[0].length;
  }
  if (at < shown.length || nodes.length === 0) nodes.push(document.createTextNode(shown.slice(at)));
  return nodes;
}

/** What to show of a found message: its text where the query is, else the name of the file that matched. */
function foundText(msg, query) {
  const lower = query.toLocaleLowerCase();
  const text = msg.text ?? '';
  if (text.toLocaleLowerCase().includes(lower)) return text;
  const file = (msg.media ?? []).find((media) => (media.filename ?? '').toLocaleLowerCase().includes(lower));
  if (file) return text ? `${text} · 📎 ${file.filename}` : `📎 ${file.filename}`;
  return text || `📎 ${msg.media?.[0]?.filename ?? 'File'}`;
}

export class SearchBar {
  /**
   * @param {object} actions
   * @param {(conv: object, query: string, before: number|null) => Promise<object>} actions.search one page of results
   * @param {(messageId: string) => boolean} actions.reveal show the message in the chat; false when it is not loaded
   */
  constructor(store, actions) {
    this.store = store;
    this.actions = actions;
    this.panel = $('#chat-search');
    this.form = $('#chat-search-form');
    this.input = $('#chat-search-input');
    this.status = $('#chat-search-status');
    this.results = $('#chat-search-results');
    this.olderButton = $('#chat-search-older');
    this.toggle = $('#chat-search-button');
    this.conv = null;
    this.query = '';
    this.found = 0;
    this.nextBefore = null;
    this.loadingOlder = false;
    // Bumped by every new search and by closing: a page that comes back for an earlier one is dropped.
    this.generation = 0;
    this.bind();
  }

  bind() {
    this.toggle.addEventListener('click', () => (this.panel.hidden ? this.open() : this.close()));
    $('#chat-search-close').addEventListener('click', () => this.close());
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submit();
    });
    this.olderButton.addEventListener('click', () => this.more());
    this.panel.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      event.preventDefault();
      this.close();
    });
  }

  get isOpen() {
    return !this.panel.hidden;
  }

  /** The search button is for chats the server knows (a draft has nothing to search yet). */
  showFor(conv) {
    this.toggle.hidden = conv.id === null;
    if (this.isOpen && conv.id === null) this.close({ restoreFocus: false });
  }

  open() {
    this.panel.hidden = false;
    this.toggle.setAttribute('aria-expanded', 'true');
    this.input.focus();
    this.input.select();
  }

  close({ restoreFocus = true } = {}) {
    if (!this.isOpen) return;
    this.generation += 1;
    this.panel.hidden = true;
    this.toggle.setAttribute('aria-expanded', 'false');
    this.input.value = '';
    this.clear();
    if (restoreFocus) this.toggle.focus();
  }

  clear() {
    this.query = '';
    this.found = 0;
    this.nextBefore = null;
    this.results.replaceChildren();
    this.status.textContent = '';
    this.olderButton.hidden = true;
  }

  async submit() {
    const conv = this.store.get(this.store.openKey);
    const query = this.input.value.trim();
    if (!conv || conv.id === null || !query) return;
    if (utf8Bytes(query) > QUERY_BYTES_MAX) {
      this.clear();
      this.status.textContent = 'That is too long to search for. Try a shorter part of the message.';
      return;
    }
    this.clear();
    this.conv = conv;
    this.query = query;
    await this.load(null);
  }

  async more() {
    // Not disabled while it loads: a disabled button would drop the keyboard focus.
    if (this.nextBefore === null || this.loadingOlder) return;
    this.loadingOlder = true;
    await this.load(this.nextBefore);
    this.loadingOlder = false;
  }

  async load(before) {
    const generation = ++this.generation;
    const { conv, query } = this;
    this.status.textContent = before === null ? 'Searching…' : 'Searching older messages…';
    let page;
    try {
      page = await this.actions.search(conv, query, before);
    } catch (err) {
      if (generation !== this.generation) return;
      this.status.textContent = `The search failed. ${describeError(err)}`;
      return;
    }
    if (generation !== this.generation) return;
    const added = page.messages.map((msg) => this.item(msg, query));
    const olderFocused = document.activeElement === this.olderButton;
    this.results.append(...added);
    this.found += added.length;
    this.nextBefore = page.next_before ?? null;
    this.olderButton.hidden = this.nextBefore === null;
    this.status.textContent = this.summary();
    // The older button went away under the keyboard: the focus goes on to the first of what it brought.
    if (olderFocused && this.olderButton.hidden) (added[0]?.querySelector('button') ?? this.input).focus();
  }

  summary() {
    if (this.found === 0) {
      // The server stops after a stretch of history; "none" is only sure once it reached the start.
      return this.nextBefore === null ? 'No messages found' : 'None found in the newest messages. Search older ones?';
    }
    const count = `${this.found} message${this.found === 1 ? '' : 's'} found`;
    return this.nextBefore === null ? count : `${count} so far`;
  }

  item(msg, query) {
    const me = this.store.me.username;
    const button = h('button', {
      type: 'button',
      class: 'search-result',
      dataset: { testid: 'search-result', messageId: msg.message_id },
      onclick: () => {
        if (!this.actions.reveal(msg.message_id)) {
          this.status.textContent = 'That message is further back than the chat has loaded; scroll up to get to it.';
        }
      },
    },
    h('span', { class: 'search-result-head' },
      h('span', { class: 'search-result-from' }, msg.from === me ? 'You' : msg.from),
      h('time', { class: 'search-result-time', datetime: new Date(msg.ts_ms).toISOString() }, formatDateTime(msg.ts_ms))),
    h('span', { class: 'search-result-text', dataset: { testid: 'search-result-text' } }, highlighted(foundText(msg, query), query)));
    return h('li', {}, button);
  }
}

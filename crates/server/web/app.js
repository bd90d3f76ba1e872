// Wiring: the sign-in screen, then one Session per page life that joins the
// REST client, the connection, the outbox, the store and the views.
// Logging out reloads the page, so no state of one account can leak into
// the next.

import { Api, ApiError, MEDIA_BYTES_MAX, loadSession, saveSession, clearSession } from './api.js';
import { Connection } from './connection.js';
import { Outbox, newClientMsgId } from './outbox.js';
import { Crypto } from './crypto.js';
import { sealFile, openFile, sharedFile } from './filecrypt.js';
import { VerifyDialog } from './views/verify.js';
import { Store } from './store.js';
import { $, h, describeError, initial, hueClass } from './views/dom.js';
import { ListView, previewText } from './views/list.js';
import { ChatView, mediaName } from './views/chat.js';
import { StatusView } from './views/status.js';
import { Notifier } from './notifications.js';
import { confirmDialog, DevicesDialog, NewGroupDialog, GroupInfoDialog, ImageDialog } from './views/dialogs.js';

const params = new URLSearchParams(location.search);
// `?transport=poll` / `?transport=ws` pin the transport (tests, debugging); otherwise it is chosen automatically.
const TRANSPORT = ['ws', 'poll'].includes(params.get('transport')) ? params.get('transport') : 'auto';
// `?probe_ms=500`: while long-polling, try the WebSocket again this soon (tests); otherwise after 5 s.
const PROBE_MS = Number.parseInt(params.get('probe_ms') ?? '', 10);
const PROBE_FIRST_MS = PROBE_MS >= 100 && PROBE_MS <= 120000 ? PROBE_MS : undefined;
const FLASH_KEY = 'missive.flash';
const USERNAME_PATTERN = /^[a-z0-9_.]{3,32}$/;
const HISTORY_PAGE = 40;
const PRESENCE_POLL_MS = 30000;
const TOAST_MS = 6000;
// Logging out waits this long at most for the device's keys to be deleted from IndexedDB.
const FORGET_KEYS_MS = 2000;
// How often disappearing messages past their time are taken off screen.
const EXPIRY_CHECK_MS = 10000;
// Thumbnails kept as blob: URLs; the least recently used beyond this are revoked (fetched again if shown again).
const THUMBNAILS_KEPT = 150;
// A download link's blob: URL outlives the click by this much, for the browser to start reading it.
const DOWNLOAD_URL_MS = 60000;
// What the server accepts (it sniffs the bytes; this only spares uploads that are sure to be refused).
const ALLOWED_TYPES = new Set([
  'image/jpeg', 'image/png', 'image/gif', 'image/webp', 'video/mp4', 'video/webm', 'audio/mpeg', 'audio/mp3',
  'audio/ogg', 'application/ogg', 'video/ogg', 'audio/wav', 'audio/x-wav', 'audio/wave', 'application/pdf',
]);

// ---- sign in --------------------------------------------------------------------

function showAuth() {
  $('#app-view').hidden = true;
  $('#auth-view').hidden = false;
  document.title = 'missive';
  const flash = sessionStorage.getItem(FLASH_KEY);
  sessionStorage.removeItem(FLASH_KEY);
  $('#auth-error').textContent = flash ?? '';
  $('#auth-username').focus();
  showRegistrationMode();
}

/** Offers an invite field, or no sign-up at all, as the server takes registrations. */
async function showRegistrationMode() {
  let mode = 'open';
  try {
    mode = (await new Api().registration()).mode;
  } catch {
    // Unknown: offer sign-up; the server's answer to it will explain.
  }
  $('#auth-invite-field').hidden = mode !== 'invite';
  $('#auth-register').hidden = mode === 'closed';
  $('.auth-lead').textContent = mode === 'closed'
    ? 'Log in. Accounts on this server are created by its operator.'
    : mode === 'invite'
      ? 'Log in, or create an account with an invite code.'
      : 'Log in, or create an account to start chatting.';
}

function bindAuth() {
  const form = $('#auth-form');
  const error = $('#auth-error');
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const register = event.submitter?.value === 'register';
    const username = $('#auth-username').value.trim().toLowerCase();
    const password = $('#auth-password').value;
    // Checked here too, so a typo costs no round trip (and no rate-limited attempt).
    if (!USERNAME_PATTERN.test(username)) {
      error.textContent = describeError({ code: 'invalid_username' });
      $('#auth-username').focus();
      return;
    }
    if (password.length < 8) {
      error.textContent = describeError({ code: 'invalid_password' });
      $('#auth-password').focus();
      return;
    }
    const buttons = form.querySelectorAll('button');
    buttons.forEach((button) => { button.disabled = true; });
    error.textContent = register ? 'Creating your account…' : 'Logging in…';
    try {
      const api = new Api();
      if (register) await api.register(username, password, $('#auth-invite').value.trim());
      const login = await api.login(username, password);
      const saved = { token: login.token, username: login.username, deviceId: login.device_id };
      saveSession(saved);
      form.reset();
      error.textContent = '';
      new Session(saved).start();
    } catch (err) {
      error.textContent = describeError(err);
    } finally {
      buttons.forEach((button) => { button.disabled = false; });
    }
  });
}

// ---- a signed-in page ---------------------------------------------------------------

class Session {
  constructor(saved) {
    this.me = { username: saved.username, deviceId: saved.deviceId };
    this.api = new Api(saved.token, () => this.revoked());
    this.store = new Store(this.me);
    this.outbox = new Outbox(`missive.outbox.${saved.username}.${saved.deviceId}`, {
      onSent: (entry, reply) => this.sent(entry, reply),
      onFailed: (entry, err) => this.refused(entry, err),
      onSynced: (changes) => this.outboxSynced(changes),
      prepare: (entry) => (entry.frame.encrypted ? this.crypto.seal(entry.frame) : entry.frame),
      reconsider: (entry, err) => this.sealInstead(entry, err),
    });
    this.crypto = null;
    this.thumbnails = new Map(); // media id -> Promise<blob: URL>, least recently used first
    this.renderTimer = null;
    this.renderDetail = {};
    this.listTimer = null;
    this.listLoaded = false;
    this.listLoading = null;
    this.presenceKey = null;
    this.presenceTimer = null;
    this.presenceRefused = new Set(); // draft peers left out of the watch list after an unknown_user
    this.onlineWaiters = [];
    this.ending = false;
  }

  async start() {
    $('#auth-view').hidden = true;
    $('#app-view').hidden = false;
    $('#me-name').textContent = this.me.username;
    const avatar = $('#me-avatar');
    avatar.className = `avatar ${hueClass(this.me.username)}`;
    avatar.textContent = initial(this.me.username);

    this.status = new StatusView({ onRetry: () => this.connection?.retryNow() });
    setInterval(() => {
      if (this.store.dropExpired()) this.render();
    }, EXPIRY_CHECK_MS);
    this.listView = new ListView(this.store, { onOpen: (key) => this.navigate(key) });
    this.chatView = new ChatView(this.store, this.chatActions());
    this.devicesDialog = new DevicesDialog(this.api, {
      onRevokedSelf: () => this.logout({ ask: false }),
      verifier: () => (this.crypto?.available && this.verifyDialog
        ? (deviceId) => this.verifyDialog.start(this.me.username, deviceId)
        : null),
    });
    this.groupDialog = new NewGroupDialog(this.api, {
      onCreated: async (group) => {
        await this.refreshList();
        this.navigate(String(group.conversation));
      },
    });
    this.groupInfoDialog = new GroupInfoDialog(this.api, this.me, {
      onChanged: () => this.refreshList(),
      onLeft: (conversation, err) => {
        if (err) this.toast(describeError(err));
        const conv = this.store.get(conversation);
        if (conv && !err) conv.left = true;
        this.refreshList();
      },
    });
    this.imageDialog = new ImageDialog();
    this.notifier = new Notifier($('#notify-button'), { onRefused: (message) => this.toast(message) });
    this.bind();

    this.store.addEventListener('change', (event) => this.changed(event.detail));
    this.store.visible = document.visibilityState === 'visible';
    this.restoreOutbox();

    // Keys before the first frame: an encrypted message taken without them would be shown (and acked) unread.
    this.crypto = await Crypto.open(this.api, this.me, {
      apply: (frame) => {
        if (frame.type === 'devices_changed') this.devicesChanged(frame.user);
        this.store.applyFrame(frame);
      },
      request: (frame) => this.connection.request(frame),
      warn: (message) => this.toast(message),
      onVerify: (from, fromDevice, body, message) => this.verifyDialog?.incoming(from, fromDevice, body, message),
      kindOf: (conversation) => this.store.get(String(conversation))?.kind ?? null,
    });
    if (this.crypto.available) {
      this.verifyDialog = new VerifyDialog(this.crypto, {
        onVerified: (user) => {
          for (const conv of this.store.conversations.values()) {
            if (conv.peer === user) conv.verification = null;
          }
          this.render();
        },
      });
    }
    $('#app-view').dataset.encryption = this.crypto.available ? 'ready' : 'unavailable';
    this.connection = new Connection({
      api: this.api,
      mode: TRANSPORT,
      onFrame: (frame) => this.crypto.incoming(frame),
      onStatus: (status) => {
        this.status.update(status, this.outbox.entries.length);
        // Cut off, we cannot know who is online: show nobody as online until the subscription answers again.
        if (status.state !== 'online') this.store.forgetPresence();
      },
      onOnline: (transport) => this.online(transport),
      onRevoked: () => this.revoked(),
      probeFirstMs: PROBE_FIRST_MS,
    });
    this.outbox.attach(this.connection);
    this.connection.start();
    this.refreshList();
    this.route();
  }

  bind() {
    window.addEventListener('hashchange', () => this.route());
    document.addEventListener('visibilitychange', () => {
      this.store.visible = document.visibilityState === 'visible';
      // The user may have allowed or blocked notifications in the browser's settings meanwhile.
      this.notifier.update();
      this.markRead();
    });
    $('#new-chat-form').addEventListener('submit', (event) => {
      event.preventDefault();
      this.startChat($('#new-chat-username').value);
    });
    $('#new-group-button').addEventListener('click', () => this.groupDialog.open());
    $('#devices-button').addEventListener('click', () => this.devicesDialog.open());
    $('#logout-button').addEventListener('click', () => this.logout({ ask: true }));
  }

  chatActions() {
    return {
      back: () => this.back(),
      send: (conv, text, options) => this.send(conv, text, options),
      edit: (conv, msg, text) => this.edit(conv, msg, text),
      remove: (conv, msg) => this.remove(conv, msg),
      react: (conv, msg, emoji) => this.react(conv, msg, emoji),
      copy: (text) => this.copy(text),
      discard: (conv, msg) => this.store.discard(conv, msg),
      typing: (conv, state) => this.typing(conv, state),
      loadOlder: (conv) => this.loadOlder(conv),
      search: (conv, query, before) => this.api.searchMessages(conv.id, query, { before }),
      fileProblem: (file, conv) => this.fileProblem(file, conv),
      upload: (file, onProgress, conv) => this.upload(file, onProgress, conv),
      thumbnailUrl: (mediaId) => this.thumbnailUrl(mediaId),
      openImage: (media, msg) => this.imageDialog.open(`Photo from ${msg.from}`, mediaName(media),
        this.whenOnline().then(() => this.mediaBlobUrl(media.media_id))),
      download: (media, name) => this.download(media, name),
      groupInfo: (conv) => conv?.id && this.groupInfoDialog.open(conv.id),
      verify: (conv) => conv?.peer && this.verifyDialog?.start(conv.peer),
    };
  }

  // ---- rendering --------------------------------------------------------------------

  changed(detail) {
    for (const flag of ['own', 'history']) {
      if (detail[flag] && detail.key === this.store.openKey) this.renderDetail[flag] = true;
    }
    if (detail.incoming && detail.message) this.notifyMessage(detail.key, detail.message);
    if (this.store.needsListRefresh) this.refreshListSoon();
    // An expired range counts as seen once its note shows in the open chat, like a message.
    if (detail.key && detail.key === this.store.openKey && (detail.message || detail.expired)) this.markReadSoon();
    if (!this.renderTimer) {
      // One render per burst: a reconnect can bring hundreds of frames in one go.
      this.renderTimer = setTimeout(() => this.render(), 0);
    }
  }

  render() {
    this.renderTimer = null;
    const detail = this.renderDetail;
    this.renderDetail = {};
    this.listView.render();
    this.chatView.render(detail);
    const unread = this.store.totalUnread();
    document.title = unread > 0 ? `(${unread}) missive` : 'missive';
    this.status.setWaiting(this.outbox.entries.length);
    this.subscribePresence();
    const conv = this.store.get(this.store.openKey);
    if (conv && conv.id !== null && conv.history === 'none') this.loadHistory(conv);
    if (conv?.encrypted && conv.kind === 'direct' && conv.peer && !conv.verification && this.connection?.online) {
      this.checkVerification(conv);
    }
  }

  /** A user's devices with keys changed: a 1:1 with them is checked again (a new device is not verified). */
  devicesChanged(user) {
    for (const conv of this.store.conversations.values()) {
      if (conv.peer === user) conv.verification = null;
    }
    this.render();
  }

  /** Whether every device of a 1:1's other user is verified here: `conv.verification`, shown in the header. */
  async checkVerification(conv) {
    if (!this.crypto.available || conv.verificationChecking) return;
    conv.verificationChecking = true;
    try {
      const devices = await this.crypto.devicesOf(conv.peer);
      conv.verification = devices.length > 0 && devices.every((device) => device.verified) ? 'verified' : 'unverified';
      this.changed({ key: conv.key });
    } catch {
      // Offline: asked again at the next render.
    } finally {
      conv.verificationChecking = false;
    }
  }

  /** A message from someone else has come in live: a notification, if the page is hidden and they are allowed. */
  notifyMessage(key, messageId) {
    const conv = this.store.get(key);
    const msg = conv?.messages.get(messageId);
    // Not for group events, nor for what this account has already read on another device.
    if (!msg || msg.kind !== 'text' || msg.seq <= conv.readSeq) return;
    this.notifier.show({
      title: conv.kind === 'group' ? `${msg.from} in ${this.store.title(conv)}` : msg.from,
      body: previewText(this.store, { kind: 'direct' }, msg),
      tag: `missive:${conv.key}`,
      onClick: () => this.navigate(conv.key),
    });
  }

  toast(message) {
    const toast = $('#toast');
    toast.textContent = message;
    toast.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => { toast.hidden = true; }, TOAST_MS);
  }

  // ---- navigation -------------------------------------------------------------------

  navigate(key) {
    const hash = `#/chat/${encodeURIComponent(key)}`;
    if (location.hash === hash) this.route();
    else location.hash = hash;
  }

  back() {
    const key = this.store.openKey;
    location.hash = '#/';
    if (key) setTimeout(() => this.listView.focus(key), 0);
  }

  route() {
    const match = /^#\/chat\/(.+)$/.exec(location.hash);
    let key = null;
    try {
      key = match ? decodeURIComponent(match[1]) : null;
    } catch {
      // A mangled link (a stray "%"): show the list rather than fail.
    }
    let conv = key ? this.store.get(key) : null;
    if (!conv && key?.startsWith('u:') && USERNAME_PATTERN.test(key.slice(2))) conv = this.store.draftFor(key.slice(2));
    if (key && !conv && !this.listLoaded) return; // routed again once the list is in
    const previous = this.store.openKey;
    this.store.openKey = conv?.key ?? null;
    if (previous && previous !== this.store.openKey) this.store.closeMissing(previous);
    $('#layout').dataset.view = conv ? 'chat' : 'list';
    if (conv) {
      if (conv.unread > 0) conv.unread = 0;
      if (conv.history === 'error') conv.history = 'none';
      if (conv.key !== previous) setTimeout(() => this.chatView.focusComposer(), 0);
    }
    this.render();
    this.markRead();
  }

  // ---- connection ---------------------------------------------------------------------

  online(transport) {
    for (const resolve of this.onlineWaiters.splice(0)) resolve();
    this.presenceKey = null;
    clearInterval(this.presenceTimer);
    if (transport === 'poll') {
      // Long-polling gets presence as snapshots only.
      this.presenceTimer = setInterval(() => this.subscribePresence(true), PRESENCE_POLL_MS);
    }
    for (const conv of this.store.conversations.values()) {
      if (conv.history === 'error') conv.history = 'none';
    }
    this.crypto.publish().then(() => this.crypto.topUpIfLow());
    this.outbox.flush();
    this.refreshList();
    // Failed ones were dropped from `thumbnails` (see thumbnailUrl), so these are fetched anew.
    this.chatView.retryThumbnails();
    this.subscribePresence(true);
    this.markRead();
    this.render();
  }

  subscribePresence(force = false) {
    if (!this.connection?.online) return;
    const peers = this.store.directPeers().filter((peer) => !this.presenceRefused.has(peer)).slice(0, 256);
    const key = peers.join(',');
    if (!force && key === this.presenceKey) return;
    this.presenceKey = key;
    if (peers.length === 0) return;
    this.connection.request({ type: 'subscribe_presence', users: peers }).catch((err) => {
      if (this.presenceKey === key) this.presenceKey = null;
      // A draft chat may name someone who does not exist, which refuses the whole list: watch the others.
      const drafts = peers.filter((peer) => this.store.get(`u:${peer}`));
      if (err.code === 'unknown_user' && drafts.length > 0) {
        for (const peer of drafts) this.presenceRefused.add(peer);
        this.subscribePresence(true);
      }
    });
  }

  revoked() {
    sessionStorage.setItem(FLASH_KEY, 'This browser was logged out: its device was revoked or its session ended.');
    this.end();
  }

  async logout({ ask }) {
    const waiting = this.outbox.entries.length;
    if (ask) {
      const question = waiting > 0
        ? `Log out? ${waiting} message${waiting === 1 ? ' has' : 's have'} not been sent yet and will be lost.`
        : 'Log out of missive on this browser?';
      if (!(await confirmDialog(question, 'Log out'))) return;
    }
    // Stop first: the server closes our socket as revoked, which must not read as "revoked elsewhere".
    this.connection?.stop();
    try {
      await this.api.logout();
    } catch (err) {
      if (!(err instanceof ApiError) || err.code !== 'token_invalid') {
        sessionStorage.setItem(FLASH_KEY, 'Logged out here, but the server could not be told: revoke this device from another one.');
      }
    }
    this.end();
  }

  end() {
    if (this.ending) return;
    this.ending = true;
    this.connection?.stop();
    this.outbox.clear();
    clearSession();
    for (const url of this.thumbnails.values()) url.then((value) => URL.revokeObjectURL(value), () => {});
    // The device is gone, and its keys with it; a fresh page then, so nothing of this account stays in memory.
    const forgotten = this.crypto?.forget() ?? Promise.resolve();
    const reload = () => location.replace(location.pathname + location.search);
    Promise.race([forgotten, new Promise((resolve) => setTimeout(resolve, FORGET_KEYS_MS))]).then(reload, reload);
  }

  // ---- conversations ---------------------------------------------------------------------

  refreshListSoon() {
    if (this.listTimer) return;
    this.listTimer = setTimeout(() => {
      this.listTimer = null;
      this.refreshList();
      this.markSyncing();
    }, 250);
    this.markSyncing();
  }

  /** `data-syncing` on the list says whether a refresh is due or running (tests wait for it to settle). */
  markSyncing() {
    $('#conversation-list').dataset.syncing = String(Boolean(this.listTimer || this.listLoading));
  }

  async refreshList() {
    if (this.listLoaded && !this.connection?.online) {
      // The server is away; `online` fetches the list when it is back. Asking now would only fail.
      return;
    }
    if (this.listLoading) {
      this.listAgain = true;
      return this.listLoading;
    }
    this.listLoading = (async () => {
      try {
        // Also the receipt cursors: `delivered` and `read` frames are live only, and this runs on every (re)connect.
        const { conversations } = await this.api.conversations();
        for (const summary of conversations) {
          if (summary.last_message) summary.last_message = this.crypto.opened(summary.last_message, true);
        }
        this.store.setConversations(conversations);
        const first = !this.listLoaded;
        this.listLoaded = true;
        if (first) this.route();
      } catch {
        // Offline: the list is fetched again when the connection returns.
      }
    })();
    this.markSyncing();
    await this.listLoading;
    this.listLoading = null;
    if (this.listAgain) {
      this.listAgain = false;
      await this.refreshList();
    }
    this.markSyncing();
  }

  async loadHistory(conv) {
    if (!this.connection?.online) return; // `online` renders again, which asks again
    conv.history = 'loading';
    // Taken before asking: the page reflects every event up to here, not necessarily those arriving meanwhile.
    const knownLastSeq = conv.lastSeq;
    try {
      const page = this.crypto.openPage(await this.api.history(conv.id, { limit: HISTORY_PAGE }));
      this.store.historyPage(conv, page, knownLastSeq);
    } catch {
      conv.history = 'error';
      this.changed({ key: conv.key });
    }
  }

  async loadOlder(conv) {
    if (conv.loadingOlder || conv.nextBefore === null || conv.id === null || !this.connection?.online) return;
    conv.loadingOlder = true;
    this.changed({ key: conv.key });
    const knownLastSeq = conv.lastSeq;
    try {
      const page = this.crypto.openPage(await this.api.history(conv.id, { before: conv.nextBefore, limit: HISTORY_PAGE }));
      conv.loadingOlder = false;
      this.store.historyPage(conv, page, knownLastSeq);
    } catch {
      conv.loadingOlder = false;
      this.changed({ key: conv.key });
    }
  }

  markReadSoon() {
    if (this.readTimer) return;
    // One read receipt for a burst of messages, not one each.
    this.readTimer = setTimeout(() => {
      this.readTimer = null;
      this.markRead();
    }, 50);
  }

  markRead() {
    const conv = this.store.get(this.store.openKey);
    if (!conv || conv.id === null || conv.left || !this.store.visible || !this.connection?.online) return;
    if (conv.lastSeq <= conv.readSeq) {
      if (conv.unread) {
        conv.unread = 0;
        this.changed({ key: conv.key, list: true });
      }
      return;
    }
    const seq = conv.lastSeq;
    const before = conv.readSeq;
    conv.readSeq = seq;
    conv.unread = 0;
    this.changed({ key: conv.key, list: true });
    this.connection.request({ type: 'read', conversation: conv.id, seq }).then((reply) => {
      conv.readSeq = Math.max(conv.readSeq, reply.seq);
    }, () => {
      // Not stored: try again when the connection is back.
      if (conv.readSeq === seq) conv.readSeq = before;
    });
  }

  /**
   * Open a chat with someone by name, once the server says they exist (`GET /v1/users?username=`, which adds
   * no contact: that would show them our presence under "contacts" privacy). Nothing is added for a name
   * nobody has; when the server cannot be asked, the chat opens and its first message will tell.
   */
  async startChat(input) {
    const error = $('#new-chat-error');
    const username = input.trim().replace(/^@/, '').toLowerCase();
    error.textContent = '';
    if (!USERNAME_PATTERN.test(username)) {
      error.textContent = describeError({ code: 'invalid_username' });
      return;
    }
    if (username === this.me.username) {
      error.textContent = 'That is you. Pick someone else.';
      return;
    }
    try {
      const found = await this.api.request('GET', `/v1/users?username=${encodeURIComponent(username)}`,
        undefined, { timeoutMs: 5000 });
      if (found?.users?.length === 0) {
        error.textContent = describeError({ code: 'unknown_user' });
        return;
      }
    } catch (err) {
      if (err?.code === 'invalid_username') {
        error.textContent = describeError(err);
        return;
      }
    }
    $('#new-chat-username').value = '';
    this.presenceRefused.delete(username);
    this.navigate(this.store.draftFor(username).key);
  }

  // ---- our messages -------------------------------------------------------------------------

  restoreOutbox() {
    for (const entry of this.outbox.entries) this.showPending(entry);
    this.outbox.save();
  }

  /** A waiting send from storage (an earlier page life, another tab) shown as pending in its chat. */
  showPending(entry) {
    if (entry.frame.type !== 'send') return;
    const conv = entry.frame.conversation ? this.store.ensure(entry.frame.conversation) : this.store.draftFor(entry.frame.to);
    entry.convKey = conv.key;
    if (conv.messages.has(`local:${entry.frame.client_msg_id}`)) return;
    this.store.addPending(conv, {
      clientMsgId: entry.frame.client_msg_id,
      text: entry.frame.text,
      target: entry.frame.reply_to ?? null,
      media: entry.media ?? [],
      createdMs: entry.createdMs,
    });
  }

  /** Another tab of this browser wrote to the shared outbox. */
  outboxSynced({ added, gone }) {
    for (const entry of added) this.showPending(entry);
    // Sent by the other tab: the stored copy replaces our pending one when the chat's newest page comes in.
    const convs = new Set(gone.filter((entry) => entry.frame.type === 'send').map((entry) => this.store.get(entry.convKey)));
    for (const conv of convs) {
      if (conv?.id && conv.history === 'loaded') this.reloadNewest(conv, { reset: false });
    }
    this.status.setWaiting(this.outbox.entries.length);
  }

  enqueue(conv, frame, extra = {}) {
    this.outbox.add({ frame, convKey: conv.key, createdMs: Date.now(), ...extra });
    this.status.setWaiting(this.outbox.entries.length);
  }

  send(conv, text, { replyTo = null, media = [] } = {}) {
    const clientMsgId = newClientMsgId();
    const frame = { type: 'send', client_msg_id: clientMsgId, text };
    if (conv.id !== null) frame.conversation = conv.id;
    else frame.to = conv.peer;
    if (replyTo) frame.reply_to = replyTo;
    const refs = media.map((item) => ({
      media_id: item.media_id,
      content_type: item.content_type,
      size_bytes: item.size_bytes,
      width: item.width,
      height: item.height,
      thumbnail: Boolean(item.thumbnail),
      ...(item.filename ? { filename: item.filename } : {}),
      ...(item.file ? { file: item.file } : {}),
    }));
    if (refs.length) frame.media = refs.map((ref) => ref.media_id);
    if (conv.encrypted) {
      if (refs.some((ref) => !ref.file)) {
        this.toast('This file was uploaded unencrypted, so it is not sent into an encrypted chat.');
        return;
      }
      frame.encrypted = true;
      // Sealed into the ciphertext by crypto.seal, never sent as they are.
      if (refs.length) frame.files = refs.map(sharedFile);
    }
    const createdMs = Date.now();
    this.store.addPending(conv, { clientMsgId, text, target: replyTo, media: refs, createdMs });
    this.enqueue(conv, frame, { media: refs, createdMs });
  }

  edit(conv, msg, text) {
    if (text === msg.text) return;
    this.store.applyOwnChange(conv, msg, 'edit', text);
    this.enqueue(conv, { type: 'edit', conversation: conv.id, client_msg_id: newClientMsgId(), target: msg.message_id, text });
  }

  async remove(conv, msg) {
    if (!(await confirmDialog('Delete this message for everyone?', 'Delete for everyone'))) return;
    this.store.applyOwnChange(conv, msg, 'delete', '');
    this.enqueue(conv, { type: 'delete', conversation: conv.id, client_msg_id: newClientMsgId(), target: msg.message_id });
  }

  react(conv, msg, emoji) {
    this.store.applyOwnChange(conv, msg, 'reaction', emoji ?? '');
    const frame = { type: 'react', conversation: conv.id, client_msg_id: newClientMsgId(), target: msg.message_id };
    if (emoji) frame.emoji = emoji;
    this.enqueue(conv, frame);
  }

  sent(entry, reply) {
    const draftKey = entry.convKey;
    if (entry.frame.encrypted && entry.frame.to) this.crypto.created(reply.conversation);
    const conv = this.store.confirmed(entry, reply);
    if (entry.frame.to) {
      this.outbox.retarget(entry.frame.to, reply.conversation);
      if (location.hash === `#/chat/${encodeURIComponent(draftKey)}`) {
        history.replaceState(null, '', `#/chat/${encodeURIComponent(conv.key)}`);
      }
    }
    if (conv.key === this.store.openKey) this.markRead();
    this.status.setWaiting(this.outbox.entries.length);
  }

  /**
   * A text refused plain because its conversation is end-to-end encrypted (switched on since the list was read, or
   * the server requires it): it goes again, sealed, under the same client id. True when it will.
   */
  sealInstead(entry, err) {
    const frame = entry.frame;
    if (frame.type !== 'send' || frame.encrypted || frame.media?.length || !this.crypto?.available) return false;
    if (err.code !== 'conversation_encrypted' && err.code !== 'encryption_required') return false;
    frame.encrypted = true;
    const conv = this.store.get(entry.convKey);
    if (conv) conv.encrypted = true;
    return true;
  }

  refused(entry, err) {
    if (entry.frame.to && err.code === 'unknown_user') {
      this.noSuchUser(entry, entry.frame.to);
      return;
    }
    const reason = describeError(err);
    this.store.failed(entry, { message: reason });
    if (entry.frame.type !== 'send') {
      this.toast(`Not done: ${reason}`);
      // Our optimistic change did not happen; show the server's version again.
      const conv = this.store.get(entry.convKey);
      if (conv?.id) this.reloadNewest(conv);
    }
    this.status.setWaiting(this.outbox.entries.length);
  }

  /** The first message of a draft chat found no such user: say so in the chat, and drop the draft. */
  noSuchUser(entry, username) {
    const failed = [entry];
    for (const other of [...this.outbox.entries]) {
      if (other.frame.to === username) {
        // The draft's later messages name the same user; they would be refused the same way.
        failed.push(other);
        this.outbox.remove(other.frame.client_msg_id);
      }
    }
    for (const item of failed) this.store.failed(item, { message: `No user named ${username}` });
    this.store.userMissing(username);
    this.status.setWaiting(this.outbox.entries.length);
  }

  /** The newest page again; with `reset`, the server's state replaces what we show (after a refused change). */
  async reloadNewest(conv, { reset = true } = {}) {
    const knownLastSeq = conv.lastSeq;
    try {
      const page = this.crypto.openPage(await this.api.history(conv.id, { limit: HISTORY_PAGE }));
      if (reset) this.store.resetToPage(conv, page, knownLastSeq);
      else this.store.historyPage(conv, { ...page, next_before: conv.nextBefore }, knownLastSeq);
    } catch {
      // Shown as it is; the next open reloads it.
    }
  }

  async copy(text) {
    try {
      await navigator.clipboard.writeText(text);
      this.toast('Message copied');
    } catch {
      // No clipboard access (refused, or not a secure context): say so rather than pretend.
      this.toast('The message could not be copied.');
    }
  }

  typing(conv, state) {
    if (!this.connection.online || conv.id === null) return;
    this.connection.request({ type: 'typing', conversation: conv.id, state }).catch(() => {});
  }

  // ---- media ------------------------------------------------------------------------------

  /** Why the server is sure to refuse `file` (an ApiError), or null: such a file is refused before any preview. */
  fileProblem(file, conv) {
    if (conv?.encrypted) {
      // The server stores ciphertext unread, whatever the type; the tag adds 16 bytes.
      if (!this.crypto?.available) return new ApiError(0, 'encryption_unavailable', 'this browser cannot encrypt');
      if (file.size + 16 > MEDIA_BYTES_MAX) return new ApiError(413, 'media_too_large', 'too large');
      if (file.size === 0) return new ApiError(415, 'empty_file', 'empty file');
      return null;
    }
    if (file.size > MEDIA_BYTES_MAX) return new ApiError(413, 'media_too_large', 'too large');
    // The server decides by the bytes; a type the browser already knows to be refused need not travel.
    if (file.type && !ALLOWED_TYPES.has(file.type)) return new ApiError(415, 'media_type_not_allowed', 'type not allowed');
    if (file.size === 0) return new ApiError(415, 'media_type_not_allowed', 'empty file');
    return null;
  }

  upload(file, onProgress, conv) {
    const problem = this.fileProblem(file, conv);
    if (problem) return { promise: Promise.reject(problem), abort: () => {} };
    if (conv?.encrypted) return this.uploadSealed(file, onProgress);
    return this.api.upload(file, onProgress);
  }

  /** A file for an encrypted chat: sealed here (filecrypt.js), the ciphertext uploaded, the key kept for the message. */
  uploadSealed(file, onProgress) {
    let upload = null;
    let aborted = false;
    const promise = (async () => {
      const sealed = await sealFile(new Uint8Array(await file.arrayBuffer()));
      if (aborted) throw new ApiError(0, 'aborted', 'the upload was cancelled');
      upload = this.api.upload(new Blob([sealed.ciphertext]), onProgress, { encrypted: true });
      const info = await upload.promise;
      return {
        media_id: info.media_id,
        content_type: file.type || 'application/octet-stream',
        size_bytes: file.size,
        thumbnail: false,
        ...(file.name ? { filename: file.name } : {}),
        file: sealed.key,
      };
    })();
    return {
      promise,
      abort: () => {
        aborted = true;
        upload?.abort();
      },
    };
  }

  /** An encrypted message's attachment, opened, as a new blob: URL; a file that does not open is an error. */
  async openedBlobUrl(media) {
    const ciphertext = new Uint8Array(await (await this.api.media(media.media_id)).arrayBuffer());
    const plaintext = await openFile(ciphertext, media.file);
    return URL.createObjectURL(new Blob([plaintext], { type: media.content_type }));
  }

  /** A media object as a new blob: URL, which the caller revokes (the endpoints need the bearer token). */
  async mediaBlobUrl(mediaId, { thumbnail = false } = {}) {
    return URL.createObjectURL(await this.api.media(mediaId, { thumbnail }));
  }

  /** A thumbnail's blob: URL, fetched once and kept among the THUMBNAILS_KEPT most recently used. */
  thumbnailUrl(mediaId) {
    let url = this.thumbnails.get(mediaId);
    if (url) {
      this.thumbnails.delete(mediaId); // to the most recent end
    } else {
      url = this.whenOnline().then(() => this.mediaBlobUrl(mediaId, { thumbnail: true }));
      url.catch(() => {
        if (this.thumbnails.get(mediaId) === url) this.thumbnails.delete(mediaId);
      });
    }
    this.thumbnails.set(mediaId, url);
    while (this.thumbnails.size > THUMBNAILS_KEPT) {
      const [oldest, evicted] = this.thumbnails.entries().next().value;
      this.thumbnails.delete(oldest);
      // An <img> that already shows it keeps its picture; one built later fetches it again.
      evicted.then((value) => URL.revokeObjectURL(value), () => {});
    }
    return url;
  }

  /** Resolves once the connection is up: requests made while the server is away would only fail. */
  whenOnline() {
    if (this.connection.online) return Promise.resolve();
    return new Promise((resolve) => this.onlineWaiters.push(resolve));
  }

  async download(media, name) {
    try {
      await this.whenOnline();
      const url = media.file ? await this.openedBlobUrl(media) : await this.mediaBlobUrl(media.media_id);
      const link = h('a', { href: url, download: name, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), DOWNLOAD_URL_MS);
    } catch (err) {
      this.toast(`The file could not be downloaded. ${describeError(err)}`);
    }
  }
}

// ---- start ------------------------------------------------------------------------------

bindAuth();
const saved = loadSession();
if (saved) new Session(saved).start();
else showAuth();

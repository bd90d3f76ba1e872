// End-to-end encryption in the browser: the device's keys (crate missive-e2ee compiled to WebAssembly, served
// from ./e2ee/ when the server was built with scripts/build_web_e2ee.sh) kept in IndexedDB. Stored events pass
// through `incoming` before the store sees them: a room key (`to_device`) is taken and acked, an encrypted
// message is handed on with its plaintext or with why it cannot be read, and one whose room key has not come yet
// waits (with what follows it in its conversation) up to HOLD_FOR_KEY_MS. `seal` turns a send the app marked
// `encrypted` into ciphertext, sharing the room key first. The store never holds a ciphertext.

import { sharedMedia } from './filecrypt.js';

const MODULE_URL = './e2ee/e2ee.js';
const DB_NAME = 'missive-keys';
const DB_STORE = 'devices';
// One-time keys published at first start and at each `keys_low`.
const ONE_TIME_KEYS = 50;
// Below this many unclaimed one-time keys, a connecting device publishes more (the server's `keys_low` threshold).
const KEYS_LOW = 20;
// How long an encrypted message waits for its room key (sent just before it, on another queue).
const HOLD_FOR_KEY_MS = 5000;
// Conversation key of a first encrypted message to a user: its session moves to the real id once `sent` names it.
const NOT_YET_CREATED = -1;
// Decrypting changes the keys only on a session's first use; those changes are written together this soon after.
const SAVE_DELAY_MS = 200;

export const REJECTED = {
  tampered: '⚠ encrypted message rejected: it was tampered with',
  wrong_sender: '⚠ encrypted message rejected: its key belongs to another sender or conversation',
};

/** An error the outbox treats like the server's: `transient` ones are tried again. */
export class SealError extends Error {
  constructor(code, message, transient = false) {
    super(message);
    this.code = code;
    this.transient = transient;
  }
}

/** The key verification message in a to-device body, or null (a room key). */
function verificationMessage(body) {
  try {
    const message = JSON.parse(body);
    return message?.v === 1 && typeof message.verify === 'string' ? message : null;
  } catch {
    return null;
  }
}

// ---- IndexedDB: one record per device, {vault, published} ------------------------------------------

function request(req) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function database() {
  const open = indexedDB.open(DB_NAME, 1);
  open.onupgradeneeded = () => open.result.createObjectStore(DB_STORE);
  return request(open);
}

async function readRecord(id) {
  const db = await database();
  try {
    return await request(db.transaction(DB_STORE).objectStore(DB_STORE).get(id));
  } finally {
    db.close();
  }
}

async function writeRecord(id, record) {
  const db = await database();
  try {
    const tx = db.transaction(DB_STORE, 'readwrite');
    tx.objectStore(DB_STORE).put(record, id);
    await new Promise((resolve, reject) => {
      tx.oncomplete = resolve;
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

async function deleteRecord(id) {
  const db = await database();
  try {
    await request(db.transaction(DB_STORE, 'readwrite').objectStore(DB_STORE).delete(id));
  } finally {
    db.close();
  }
}

// ---- the device's keys ----------------------------------------------------------------------------

export class Crypto {
  /**
   * The device's keys: loaded from IndexedDB, or made (and published in the background). Without the module
   * (a server built without it) or IndexedDB, the app runs and shows encrypted messages as unreadable.
   * @param {object} hooks
   * @param {(frame: object) => void} hooks.apply hands an opened frame to the store
   * @param {(frame: object) => Promise<object>} hooks.request sends a frame and waits for its answer
   * @param {(message: string) => void} hooks.warn
   * @param {(from: string, fromDevice: number, body: string, message: object) => void} hooks.onVerify a key
   *   verification message from another device
   * @param {(conversation: number) => string|null} hooks.kindOf 'group' or 'direct', as far as the app knows
   */
  static async open(api, me, hooks) {
    const crypto = new Crypto(api, me, hooks);
    let module;
    try {
      module = await import(MODULE_URL);
      await module.default();
    } catch {
      return crypto; // no module: unavailable
    }
    try {
      const saved = await readRecord(crypto.recordId);
      if (saved?.vault) {
        crypto.vault = module.Vault.fromJson(saved.vault);
        crypto.published = Boolean(saved.published);
      } else {
        crypto.vault = new module.Vault(me.username, me.deviceId);
        await crypto.save();
      }
    } catch (err) {
      hooks.warn(`This browser cannot keep encryption keys (${err?.message ?? err}); encrypted messages stay unread.`);
      crypto.vault = null;
    }
    crypto.module = module;
    if (crypto.vault && !crypto.published) crypto.publish();
    crypto.followOtherTabs(module);
    return crypto;
  }

  constructor(api, me, { apply, request: send, warn, onVerify = () => {}, kindOf = () => null }) {
    this.api = api;
    this.me = me;
    this.apply = apply;
    this.send = send;
    this.warn = warn;
    this.onVerify = onVerify;
    this.kindOf = kindOf;
    this.module = null;
    this.vault = null;
    this.published = false;
    this.recordId = `${me.username}/${me.deviceId}`;
    this.waiting = []; // frames held back for a room key, in arrival order
    this.holdTimer = null;
    this.saving = Promise.resolve();
    this.channel = null;
    this.saveTimer = null;
    this.publishing = null;
    this.toppingUp = false;
    this.directMembers = new Map(); // 1:1 conversation -> its two members
  }

  /**
   * Tabs of this browser are one device and share its keys, but only the connected tab uses them: when another
   * tab saved (it was connected and took room keys, opened sessions), this one reads them again, so that it has
   * them when it takes the connection over.
   */
  followOtherTabs(module) {
    if (typeof BroadcastChannel === 'undefined') return;
    this.channel = new BroadcastChannel(`${DB_NAME}/${this.recordId}`);
    this.channel.onmessage = async () => {
      try {
        const saved = await readRecord(this.recordId);
        if (!saved?.vault || !this.vault) return;
        const previous = this.vault;
        this.vault = module.Vault.fromJson(saved.vault);
        this.published = Boolean(saved.published);
        previous.free();
      } catch {
        // Kept as it was: this tab's keys are older, not wrong.
      }
    };
  }

  get available() {
    return this.vault !== null;
  }

  /** Saves the keys; saves run one after another, each writing the state as it is then. */
  /** Saves the keys; resolves to whether they were written (saves run one after another). */
  save() {
    const saved = this.saving.then(async () => {
      if (!this.vault) return false; // forgotten meanwhile (logout)
      await writeRecord(this.recordId, { vault: this.vault.toJson(), published: this.published });
      this.channel?.postMessage('saved');
      return true;
    }).catch((err) => {
      this.warn(`The encryption keys could not be saved: ${err?.message ?? err}`);
      return false;
    });
    this.saving = saved;
    return saved;
  }

  /** Saves shortly: one write for a burst of decrypted messages. */
  saveSoon() {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      if (this.vault) this.save();
    }, SAVE_DELAY_MS);
  }

  /** Publishes the identity keys and one-time keys (once; tried again on the next call if it failed). */
  publish() {
    if (this.published || !this.vault) return Promise.resolve();
    this.publishing ??= (async () => {
      try {
        const body = {
          identity: JSON.parse(this.vault.identity()),
          one_time_keys: JSON.parse(this.vault.newOneTimeKeys(ONE_TIME_KEYS)),
        };
        await this.api.request('PUT', '/v1/keys', body);
        this.vault.markPublished();
        this.published = true;
        await this.save();
      } catch {
        // Offline: the next connection tries again (app.js calls publish when online).
      } finally {
        this.publishing = null;
      }
    })();
    return this.publishing;
  }

  /**
   * On each connection: more one-time keys if others claimed them while this browser was away (`keys_low` reaches
   * only a connected device); a device with none left gets no room keys.
   */
  async topUpIfLow() {
    if (!this.vault || !this.published) return;
    try {
      const { one_time_keys: left } = await this.api.request('GET', '/v1/keys');
      if (left < KEYS_LOW) await this.topUp();
    } catch {
      // Asked again on the next connection.
    }
  }

  async topUp() {
    if (!this.vault || !this.published || this.toppingUp) return;
    this.toppingUp = true;
    try {
      await this.uploadMoreKeys();
    } finally {
      this.toppingUp = false;
    }
  }

  async uploadMoreKeys() {
    try {
      await this.api.request('PUT', '/v1/keys', { one_time_keys: JSON.parse(this.vault.newOneTimeKeys(ONE_TIME_KEYS)) });
      this.vault.markPublished();
      await this.save();
    } catch {
      // The server asks again at the next claim that leaves few.
    }
  }

  /** Forgets this device's keys (logout, revocation). */
  async forget() {
    this.vault = null;
    this.channel?.close();
    clearTimeout(this.saveTimer);
    await this.saving;
    await deleteRecord(this.recordId).catch(() => {});
  }

  // ---- reading ------------------------------------------------------------------------------------

  /** A frame from the connection, before the store: see the file's comment. */
  incoming(frame) {
    if (frame.type === 'to_device') {
      const verify = verificationMessage(frame.body);
      // A room key is acked only once it is saved: the server deletes what is acked.
      const kept = verify ? Promise.resolve(true) : this.takeShare(frame);
      if (verify) this.onVerify(frame.from, frame.from_device, frame.body, verify);
      kept.then((saved) => saved && this.send({ type: 'to_device_ack', up_to: frame.seq })).catch(() => {
        // Not acked: it comes again on the next connection, and a room key taken twice is harmless.
      });
      return;
    }
    if (frame.type === 'keys_low') {
      this.topUp();
      return;
    }
    if (frame.type !== 'message' && frame.type !== 'expired') {
      this.apply(frame);
      return;
    }
    if (this.waiting.length > 0) {
      // Behind a held event of its conversation it waits too; other conversations' events go on.
      this.waiting.push(frame);
      this.release(false);
      return;
    }
    const opened = this.opened(frame, false);
    if (opened === null) {
      this.waiting.push(frame);
      this.release(false);
      return;
    }
    this.apply(opened);
  }

  /** Takes a room key; resolves to whether it may be acked (kept, or of no use to keep). */
  takeShare(frame) {
    if (!this.vault) return Promise.resolve(false);
    let kept;
    try {
      this.vault.receiveShare(frame.from, frame.from_device, frame.body);
      kept = this.save();
    } catch (err) {
      this.warn(`A room key from ${frame.from} could not be used: ${err?.message ?? err}`);
      kept = Promise.resolve(true); // unusable: keeping it waiting would not help
    }
    this.release(false);
    return kept;
  }

  /** Hands over what no longer waits, in order per conversation; with `finalTry`, everything. */
  release(finalTry) {
    const blocked = new Set();
    const kept = [];
    for (const frame of this.waiting) {
      if (blocked.has(frame.conversation)) {
        kept.push(frame);
        continue;
      }
      const opened = this.opened(frame, finalTry);
      if (opened === null) {
        blocked.add(frame.conversation);
        kept.push(frame);
      } else {
        this.apply(opened);
      }
    }
    this.waiting = kept;
    if (kept.length === 0) {
      clearTimeout(this.holdTimer);
      this.holdTimer = null;
    } else if (!this.holdTimer) {
      // Not pushed back by later frames: what waits is shown (unreadable) by then at the latest.
      this.holdTimer = setTimeout(() => {
        this.holdTimer = null;
        this.release(true);
      }, HOLD_FOR_KEY_MS);
    }
  }

  /**
   * An encrypted message as the store takes it: its text (and reply) from the plaintext with `decrypted`, or an
   * empty text with `decrypt_error`; null while its key may still come. Any other frame as it is.
   */
  opened(frame, finalTry) {
    if (frame.kind !== 'encrypted' || frame.deleted) return frame;
    if (!this.vault) return { ...frame, text: '', media: [], decrypt_error: 'no_key' };
    let result;
    try {
      result = JSON.parse(this.vault.decrypt(frame.conversation, frame.from, frame.from_device, frame.text));
    } catch {
      result = { error: 'tampered' };
    }
    if (result.plaintext !== undefined) {
      let content = {};
      try {
        content = JSON.parse(result.plaintext);
      } catch {
        // Not our JSON content: shown as an empty text rather than as garbage.
      }
      // A first use pins the session to its conversation: keep that.
      this.saveSoon();
      return {
        ...frame,
        text: typeof content.text === 'string' ? content.text : '',
        target: typeof content.reply_to === 'string' ? content.reply_to : frame.target ?? null,
        // The server knows them only as opaque bytes: name, type, size and key are the sender's.
        media: sharedMedia(content.files),
        decrypted: true,
      };
    }
    if (result.error === 'no_key' && !finalTry) return null;
    return { ...frame, text: '', media: [], decrypt_error: result.error };
  }

  /** Opens every encrypted message of a history page in place (never held: a page is read whole). */
  openPage(page) {
    page.messages = page.messages.map((message) => (message.kind === 'encrypted' ? this.opened(message, true) : message));
    return page;
  }

  // ---- writing ------------------------------------------------------------------------------------

  /**
   * The frame to send for a `send` marked `encrypted` (its text still plain): sessions with every member device,
   * the room key to those that lack it (sent here, first), and the ciphertext. Keys are saved before it goes.
   */
  async seal(frame) {
    if (!this.vault) {
      throw new SealError('encryption_unavailable', 'this browser has no encryption keys');
    }
    const members = await this.members(frame);
    const devices = [];
    for (const user of members) {
      const listed = await this.call('GET', `/v1/users/${encodeURIComponent(user)}/keys`);
      for (const device of listed.devices) {
        if (user === this.me.username && device.device_id === this.me.deviceId) continue;
        devices.push({ user, device_id: device.device_id, curve25519: device.curve25519, ed25519: device.ed25519 });
      }
    }
    await this.openSessions(devices);
    const stillMissing = new Set(JSON.parse(this.vault.withoutSession(JSON.stringify(devices)))
      .map(([user, device]) => `${user}/${device}`));
    const recipients = devices.filter((device) => !stillMissing.has(`${device.user}/${device.device_id}`));
    const content = { text: frame.text };
    if (frame.reply_to) content.reply_to = frame.reply_to;
    // Each attachment's key (sealed by the upload: filecrypt.js) goes inside the ciphertext, its id beside it.
    if (frame.files?.length) content.files = frame.files;
    const key = frame.conversation ?? NOT_YET_CREATED;
    const sealed = JSON.parse(this.vault.encrypt(key, JSON.stringify(recipients), JSON.stringify(content)));
    await this.save();
    if (sealed.shares.length > 0) {
      await this.send({ type: 'to_device', messages: sealed.shares });
      // Delivered: until now every seal shared the key again, so a share lost with its connection goes next time.
      this.vault.markShared(key, JSON.stringify(sealed.shares));
      await this.save();
    }
    const out = { type: 'send', client_msg_id: frame.client_msg_id, text: sealed.ciphertext, encrypted: true };
    if (frame.files?.length) out.media = frame.files.map((file) => file.media_id);
    if (frame.conversation) out.conversation = frame.conversation;
    else out.to = frame.to;
    return out;
  }

  /** A `sent` for a first encrypted message to a user names its conversation: its session moves there. */
  created(conversation) {
    if (!this.vault) return;
    this.vault.renameConversation(NOT_YET_CREATED, conversation);
    this.save();
  }

  /**
   * Who a sealed text is for: a group's members read afresh (one removed a moment ago must not get the key), a 1:1's
   * from the conversation list once (they never change).
   */
  async members(frame) {
    if (!frame.conversation) return [this.me.username, frame.to];
    const known = this.directMembers.get(frame.conversation);
    if (known) return known;
    if (this.kindOf(frame.conversation) === 'group') {
      const group = await this.api.group(frame.conversation);
      return group.members.map((member) => member.username);
    }
    const { conversations } = await this.api.conversations(); // every page
    const conv = conversations.find((summary) => summary.conversation === frame.conversation);
    if (!conv) throw new SealError('not_member', 'you are not a member of this conversation');
    if (conv.kind === 'direct') this.directMembers.set(frame.conversation, conv.members);
    return conv.members;
  }

  async openSessions(devices) {
    const missing = JSON.parse(this.vault.withoutSession(JSON.stringify(devices)));
    const wanted = new Set(missing.map(([user, device]) => `${user}/${device}`));
    for (const user of new Set(missing.map(([name]) => name))) {
      const claim = await this.call('POST', '/v1/keys/claim', { user });
      for (const device of claim.devices) {
        if (!wanted.has(`${user}/${device.device_id}`) || !device.one_time_key) continue;
        try {
          this.vault.startSession(
            JSON.stringify({ curve25519: device.curve25519, ed25519: device.ed25519 }),
            JSON.stringify(device.one_time_key),
          );
        } catch (err) {
          this.warn(`${user}'s device ${device.device_id}: ${err?.message ?? err}`);
        }
      }
    }
  }

  /** A REST call; its ApiError tells the outbox whether to try again (`transient`). */
  call(method, path, body) {
    return this.api.request(method, path, body);
  }

  // ---- key verification (short codes) --------------------------------------------------------------

  /** `user`'s devices with keys, each with whether this device verified its current key. */
  async devicesOf(user) {
    const listed = await this.call('GET', `/v1/users/${encodeURIComponent(user)}/keys`);
    return listed.devices
      .filter((device) => !(user === this.me.username && device.device_id === this.me.deviceId))
      .map((device) => ({
        ...device,
        verified: Boolean(this.vault?.isVerified(user, device.device_id, device.ed25519)),
      }));
  }

  /**
   * Starts verifying `user`'s device `deviceId`: the exchange (a wasm Verification), its `start` queued. The caller
   * keeps it before sending (`flushVerification`), so the answer cannot come before it is known.
   */
  startVerification(user, deviceId) {
    const txn = `web-${Date.now().toString(36)}-${globalThis.crypto.randomUUID()}`;
    return this.module.Verification.start(this.me.username, this.me.deviceId, user, deviceId, txn);
  }

  /** Answers another device's `start`: the exchange, its `accept` queued (send it with `flushVerification`). */
  acceptVerification(user, deviceId, body) {
    return this.module.Verification.accept(this.me.username, this.me.deviceId, user, deviceId, body);
  }

  /** Sends what the exchange queued, as one to_device frame. */
  async flushVerification(verification, user, deviceId) {
    const bodies = JSON.parse(verification.takeOutgoing());
    if (bodies.length === 0) return;
    await this.send({ type: 'to_device', messages: bodies.map((body) => ({ user, device_id: deviceId, body })) });
  }

  /** The user said the codes match: this device's MAC goes out. */
  async confirmVerification(verification, user, deviceId) {
    verification.confirm(this.vault);
    await this.flushVerification(verification, user, deviceId);
  }

  /**
   * Checks the other device's MAC against its listed key and records it verified; throws if it does not hold. A
   * device of this account gets every room key this one holds: how many (else 0).
   */
  async finishVerification(verification, user, deviceId) {
    const device = (await this.devicesOf(user)).find((listed) => listed.device_id === deviceId);
    if (!device) throw new Error(`${user}'s device has no keys any more`);
    verification.finish(this.vault, device.ed25519);
    await this.save();
    return user === this.me.username ? this.forwardKeys(device) : 0;
  }

  /** Hands `device` (of this account, just verified) the room keys this one holds, so it reads the history. */
  async forwardKeys(device) {
    const target = { user: this.me.username, device_id: device.device_id, curve25519: device.curve25519, ed25519: device.ed25519 };
    await this.openSessions([target]);
    const count = this.vault.roomKeyCount();
    const shares = JSON.parse(this.vault.forwardKeys(JSON.stringify(target)));
    await this.save();
    if (shares.length > 0) await this.send({ type: 'to_device', messages: shares });
    return count;
  }
}

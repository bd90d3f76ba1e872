// Key verification by short codes: the dialog in which two users compare the seven emoji their devices derived from
// a key exchange (crypto.js runs the exchange). Started from a 1:1 chat's Verify button, or opened by another
// device's request; ends verified (the other device's key is recorded as such), or cancelled by either side.

import { $, h } from './dom.js';

export class VerifyDialog {
  /**
   * @param {import('../crypto.js').Crypto} crypto
   * @param {object} hooks
   * @param {(user: string) => void} hooks.onVerified
   */
  constructor(crypto, { onVerified }) {
    this.crypto = crypto;
    this.onVerified = onVerified;
    this.dialog = $('#verify-dialog');
    this.lead = $('#verify-lead');
    this.codes = $('#verify-emoji');
    this.error = $('#verify-error');
    this.actions = $('#verify-actions');
    this.current = null; // {verification, user, deviceId, confirmed}
    this.dialog.addEventListener('close', () => this.abandon());
  }

  /** Starts verifying `user`'s device `deviceId` (by default their first device not yet verified). */
  async start(user, deviceId = null) {
    this.show(`Asking ${user}'s device…`);
    try {
      const devices = await this.crypto.devicesOf(user);
      const device = deviceId === null
        ? devices.find((listed) => !listed.verified) ?? devices[0]
        : devices.find((listed) => listed.device_id === deviceId);
      if (!device) {
        this.fail(`${user} has no device with encryption keys.`);
        return;
      }
      const verification = this.crypto.startVerification(user, device.device_id);
      this.current = { verification, user, deviceId: device.device_id, confirmed: false };
      this.show(`Waiting for ${user} to accept on their device (${device.device_id})…`);
      await this.crypto.flushVerification(verification, user, device.device_id);
    } catch (err) {
      this.fail(`Could not start: ${err?.message ?? err}`);
    }
  }

  /** A verification message from another device (crypto.js's onVerify). */
  async incoming(from, fromDevice, body, message) {
    if (message.verify === 'start') {
      if (this.current) return; // one at a time; the other side times out
      this.show(`${from} wants to verify your keys with their device (${fromDevice}).`, [
        this.button('Accept', 'primary', () => this.accept(from, fromDevice, body)),
        this.button('Decline', 'secondary', () => {
          this.dialog.close();
          const cancel = JSON.stringify({ v: 1, verify: 'cancel', txn: message.txn, reason: 'declined' });
          this.crypto.send({ type: 'to_device', messages: [{ user: from, device_id: fromDevice, body: cancel }] })
            .catch(() => {});
        }),
      ]);
      return;
    }
    const current = this.current;
    if (!current || current.user !== from || current.deviceId !== fromDevice || current.verification.txn() !== message.txn) return;
    try {
      current.verification.receive(body);
      await this.crypto.flushVerification(current.verification, from, fromDevice);
      await this.update();
    } catch (err) {
      this.drop(current);
      this.fail(`Not verified: ${err?.message ?? err}`);
    }
  }

  /** The exchange is over: forgotten, and its wasm memory freed. */
  drop(current) {
    if (this.current === current) this.current = null;
    try {
      current.verification.free();
    } catch {
      // Freed already.
    }
  }

  async accept(user, deviceId, body) {
    try {
      const verification = this.crypto.acceptVerification(user, deviceId, body);
      this.current = { verification, user, deviceId, confirmed: false };
      this.show(`Waiting for ${user}'s device…`);
      await this.crypto.flushVerification(verification, user, deviceId);
    } catch (err) {
      this.fail(`Could not accept: ${err?.message ?? err}`);
    }
  }

  /** After each step: the codes to compare, then the end. */
  async update() {
    const current = this.current;
    if (!current) return;
    if (current.verification.readyToFinish()) {
      this.current = null; // finished once, whatever else arrives
      const forwarded = await this.crypto.finishVerification(current.verification, current.user, current.deviceId);
      current.verification.free();
      const whose = current.user === this.crypto.me.username ? 'Your' : `${current.user}'s`;
      const handed = forwarded > 0
        ? ` It was handed ${forwarded === 1 ? 'one room key' : `${forwarded} room keys`}, so it can read earlier messages.`
        : '';
      this.show(`✓ ${whose} device is verified.${handed}`, [this.button('Done', 'primary', () => this.dialog.close())]);
      this.onVerified(current.user);
      return;
    }
    if (current.confirmed) return;
    const code = current.verification.shortCode();
    if (!code) return;
    const { emoji, decimals } = JSON.parse(code);
    this.codes.replaceChildren(...emoji.map(([symbol, name]) => h('li', { class: 'verify-emoji-item' },
      h('span', { class: 'verify-symbol', 'aria-hidden': 'true' }, symbol),
      h('span', { class: 'verify-name' }, name))));
    this.codes.dataset.emoji = emoji.map(([symbol]) => symbol).join(' ');
    this.codes.dataset.decimals = decimals.join(' ');
    this.codes.hidden = false;
    this.show(`Compare with ${current.user}: do they see these emoji, in this order (or ${decimals.join(' ')})?`, [
      this.button('They match', 'primary', () => this.match()),
      this.button("They don't match", 'danger', () => this.mismatch()),
    ], { keepCodes: true });
  }

  async match() {
    const current = this.current;
    if (!current) return;
    current.confirmed = true;
    try {
      await this.crypto.confirmVerification(current.verification, current.user, current.deviceId);
      this.show(`Waiting for ${current.user} to confirm…`, [], { keepCodes: true });
      await this.update();
    } catch (err) {
      this.drop(current);
      this.fail(`Not verified: ${err?.message ?? err}`);
    }
  }

  async mismatch() {
    const current = this.current;
    this.current = null;
    if (current) {
      current.verification.cancel('mismatch');
      await this.crypto.flushVerification(current.verification, current.user, current.deviceId).catch(() => {});
      this.drop(current);
    }
    this.fail('Not verified: the codes differ. Someone may be intercepting your messages; do not trust this device.');
  }

  /** Closed midway: the other side is told. */
  abandon() {
    const current = this.current;
    this.current = null;
    if (!current) return;
    current.verification.cancel('user_cancelled');
    this.crypto.flushVerification(current.verification, current.user, current.deviceId)
      .catch(() => {})
      .finally(() => this.drop(current));
  }

  show(text, buttons = [this.button('Cancel', 'secondary', () => this.dialog.close())], { keepCodes = false } = {}) {
    this.lead.textContent = text;
    this.error.textContent = '';
    if (!keepCodes) this.codes.hidden = true;
    this.actions.replaceChildren(...buttons);
    if (!this.dialog.open) this.dialog.showModal();
  }

  fail(text) {
    this.show('', [this.button('Close', 'secondary', () => this.dialog.close())]);
    this.error.textContent = text;
  }

  button(label, kind, onclick) {
    return h('button', { type: 'button', class: kind, onclick }, label);
  }
}

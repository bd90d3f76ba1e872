// Modal dialogs: devices, new group, group info, the full-size image, a file
// about to be sent and confirmations. Native <dialog> gives focus trapping and Escape to close.

import { h, $, formatDateTime, formatBytes, describeError } from './dom.js';
import { utf8Bytes } from '../api.js';

// The server takes device names of 1-64 UTF-8 bytes.
const DEVICE_NAME_BYTES_MAX = 64;

for (const dialog of document.querySelectorAll('dialog')) {
  for (const button of dialog.querySelectorAll('[data-close]')) {
    button.addEventListener('click', () => dialog.close());
  }
}

/** Ask before something that cannot be undone; resolves true for OK. */
export function confirmDialog(text, okLabel = 'OK') {
  const dialog = $('#confirm-dialog');
  const form = $('#confirm-form');
  $('#confirm-text').textContent = text;
  $('#confirm-ok').textContent = okLabel;
  return new Promise((resolve) => {
    let confirmed = false;
    const onSubmit = (event) => {
      event.preventDefault();
      confirmed = true;
      dialog.close();
    };
    form.addEventListener('submit', onSubmit);
    dialog.addEventListener('close', () => {
      form.removeEventListener('submit', onSubmit);
      resolve(confirmed);
    }, { once: true });
    dialog.showModal();
    $('#confirm-ok').focus();
  });
}

export class DevicesDialog {
  /**
   * @param {object} hooks
   * @param {() => void} hooks.onRevokedSelf
   * @param {() => ((deviceId: number) => void) | null} hooks.verifier how to verify another device of this account
   *   (which then gets the room keys), or null when this browser has no encryption
   */
  constructor(api, { onRevokedSelf, verifier = () => null }) {
    this.api = api;
    this.onRevokedSelf = onRevokedSelf;
    this.verifier = verifier;
    this.dialog = $('#devices-dialog');
    this.list = $('#device-list');
    this.error = $('#devices-error');
  }

  async open() {
    this.error.textContent = '';
    this.list.replaceChildren(h('li', { class: 'device' }, 'Loading…'));
    this.dialog.showModal();
    await this.refresh();
  }

  async refresh() {
    try {
      const { devices } = await this.api.devices();
      this.list.replaceChildren(...devices.map((device) => this.item(device)));
    } catch (err) {
      this.list.replaceChildren();
      this.error.textContent = describeError(err);
    }
  }

  item(device) {
    const rename = h('button', {
      type: 'button',
      class: 'secondary small',
      'aria-label': `Rename ${device.name}`,
      onclick: () => this.startRename(item, device),
    }, 'Rename');
    const revoke = h('button', {
      type: 'button',
      class: 'danger small',
      'aria-label': device.current ? 'Log out this device' : `Revoke ${device.name} (device ${device.device_id})`,
      onclick: () => this.revoke(device),
    }, device.current ? 'Log out' : 'Revoke');
    const verify = this.verifier();
    const verifyButton = device.current || !verify ? null : h('button', {
      type: 'button',
      class: 'secondary small',
      'aria-label': `Verify ${device.name} (device ${device.device_id})`,
      onclick: () => {
        this.dialog.close();
        verify(device.device_id);
      },
    }, 'Verify');
    const item = h('li', { class: 'device', dataset: { testid: 'device', deviceId: String(device.device_id), current: String(device.current) } },
      h('span', { class: 'device-text' },
        h('span', { class: 'device-name' },
          h('span', { dataset: { testid: 'device-name' } }, device.name),
          device.current ? h('span', { class: 'tag' }, 'This device') : null),
        h('span', { class: 'device-meta' },
          `Added ${formatDateTime(device.created_ms)} · last active ${formatDateTime(device.last_seen_ms)}`)),
      h('span', { class: 'device-actions' }, verifyButton, rename, revoke));
    return item;
  }

  /** The device's row becomes a small form with its name ready to change; Escape or Cancel put the row back. */
  startRename(item, device) {
    this.error.textContent = '';
    const input = h('input', {
      value: device.name, maxlength: 64, autocomplete: 'off', spellcheck: 'false',
      'aria-label': `New name for ${device.name}`,
    });
    const form = h('form', { class: 'device-rename inline-row' },
      input,
      h('button', { type: 'submit', class: 'primary small' }, 'Save'),
      h('button', { type: 'button', class: 'secondary small', onclick: () => this.cancelRename(form, item) }, 'Cancel'));
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.rename(form, device, input.value);
    });
    input.addEventListener('keydown', (event) => {
      // Escape leaves the renaming, not the whole dialog.
      if (event.key !== 'Escape') return;
      event.preventDefault();
      event.stopPropagation();
      this.cancelRename(form, item);
    });
    item.replaceWith(h('li', { class: 'device', dataset: { testid: 'device', deviceId: String(device.device_id) } }, form));
    input.focus();
    input.select();
  }

  cancelRename(form, item) {
    form.closest('li').replaceWith(item);
    item.querySelector('button')?.focus();
  }

  async rename(form, device, value) {
    const name = value.trim();
    if (!name || utf8Bytes(name) > DEVICE_NAME_BYTES_MAX || name.includes('\0')) {
      this.error.textContent = 'A device name is 1 to 64 characters long (fewer with accents or emoji).';
      return;
    }
    this.error.textContent = '';
    const buttons = form.querySelectorAll('button');
    buttons.forEach((button) => { button.disabled = true; });
    try {
      await this.api.renameDevice(device.device_id, name);
    } catch (err) {
      this.error.textContent = describeError(err);
      buttons.forEach((button) => { button.disabled = false; });
      // An unknown device has gone meanwhile (revoked elsewhere): the list shows what is left.
      if (err?.code !== 'unknown_device') return;
    }
    await this.refresh();
    // The list was built anew; the focus goes back where it was before renaming.
    this.list.querySelector(`[data-device-id="${device.device_id}"] button`)?.focus();
  }

  async revoke(device) {
    const question = device.current
      ? 'Log out of this browser?'
      : `Revoke “${device.name}”? It is logged out at once.`;
    this.dialog.close();
    if (!(await confirmDialog(question, device.current ? 'Log out' : 'Revoke'))) {
      this.dialog.showModal();
      return;
    }
    if (device.current) {
      this.onRevokedSelf();
      return;
    }
    this.dialog.showModal();
    try {
      await this.api.revokeDevice(device.device_id);
    } catch (err) {
      this.error.textContent = describeError(err);
    }
    await this.refresh();
  }
}

export function parseUsernames(text) {
  return [...new Set(text.split(/[\s,;]+/).map((name) => name.trim().replace(/^@/, '').toLowerCase()).filter(Boolean))];
}

export class NewGroupDialog {
  constructor(api, { onCreated }) {
    this.api = api;
    this.onCreated = onCreated;
    this.dialog = $('#group-dialog');
    this.form = $('#group-form');
    this.error = $('#group-error');
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      this.create();
    });
  }

  open() {
    this.form.reset();
    this.error.textContent = '';
    this.dialog.showModal();
    $('#group-name').focus();
  }

  async create() {
    const name = $('#group-name').value.trim();
    const members = parseUsernames($('#group-members').value);
    if (!name) {
      this.error.textContent = 'Give the group a name.';
      return;
    }
    const submit = this.form.querySelector('button[type="submit"]');
    submit.disabled = true;
    try {
      const group = await this.api.createGroup(name, members);
      this.dialog.close();
      this.onCreated(group);
    } catch (err) {
      this.error.textContent = describeError(err);
    } finally {
      submit.disabled = false;
    }
  }
}

export class GroupInfoDialog {
  constructor(api, me, { onChanged, onLeft }) {
    this.api = api;
    this.me = me;
    this.onChanged = onChanged;
    this.onLeft = onLeft;
    this.dialog = $('#group-info-dialog');
    this.list = $('#group-member-list');
    this.error = $('#group-info-error');
    this.addForm = $('#group-add-form');
    this.conversation = null;
    this.addForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.add();
    });
    $('#group-leave-button').addEventListener('click', () => this.leave());
  }

  async open(conversation) {
    this.conversation = conversation;
    this.error.textContent = '';
    this.addForm.reset();
    this.list.replaceChildren(h('li', { class: 'member' }, 'Loading…'));
    this.dialog.showModal();
    await this.refresh();
  }

  async refresh() {
    try {
      this.show(await this.api.group(this.conversation));
    } catch (err) {
      this.list.replaceChildren();
      this.error.textContent = describeError(err);
    }
  }

  show(group) {
    const admin = group.members.some((member) => member.username === this.me.username && member.role === 'admin');
    $('#group-info-title').textContent = group.name;
    $('#group-info-count').textContent = `${group.members.length} member${group.members.length === 1 ? '' : 's'}`;
    this.addForm.hidden = !admin;
    this.list.replaceChildren(...group.members.map((member) => {
      const self = member.username === this.me.username;
      return h('li', { class: 'member', dataset: { testid: 'group-member', username: member.username } },
        h('span', { class: 'member-text' },
          h('span', { class: 'member-name' }, self ? `${member.username} (you)` : member.username),
          h('span', { class: 'member-role' }, member.role === 'admin' ? 'Group admin' : 'Member')),
        admin && !self
          ? h('button', {
            type: 'button',
            class: 'danger small',
            'aria-label': `Remove ${member.username}`,
            onclick: () => this.remove(member.username),
          }, 'Remove')
          : null);
    }));
  }

  async add() {
    const members = parseUsernames($('#group-add-username').value);
    if (members.length === 0) return;
    try {
      this.show(await this.api.addMembers(this.conversation, members));
      this.addForm.reset();
      this.error.textContent = '';
      this.onChanged();
    } catch (err) {
      this.error.textContent = describeError(err);
    }
  }

  async remove(username) {
    try {
      this.show(await this.api.removeMember(this.conversation, username));
      this.error.textContent = '';
      this.onChanged();
    } catch (err) {
      this.error.textContent = describeError(err);
    }
  }

  async leave() {
    this.dialog.close();
    if (!(await confirmDialog('Leave this group? You will stop receiving its messages.', 'Leave'))) return;
    try {
      await this.api.leaveGroup(this.conversation);
      this.onLeft(this.conversation);
    } catch (err) {
      this.onLeft(this.conversation, err);
    }
  }
}

export class ImageDialog {
  constructor() {
    this.dialog = $('#image-dialog');
    this.image = $('#image-full');
    this.download = $('#image-download');
    this.urlPromise = null;
    // A full-size image can be 16 MiB: its blob: URL goes when the dialog closes.
    this.dialog.addEventListener('close', () => {
      this.urlPromise?.then((url) => URL.revokeObjectURL(url), () => {});
      this.urlPromise = null;
      this.image.removeAttribute('src');
      this.download.removeAttribute('href');
    });
  }

  /** Show at once; the full image arrives when `urlPromise` (a blob: URL this dialog now owns) resolves. */
  open(alt, name, urlPromise) {
    this.image.removeAttribute('src');
    this.image.alt = alt;
    this.download.hidden = true;
    this.urlPromise = urlPromise;
    this.dialog.showModal();
    urlPromise.then((url) => {
      if (this.urlPromise !== urlPromise) return; // closed meanwhile: revoked by the close
      this.image.src = url;
      this.download.href = url;
      this.download.download = name;
      this.download.hidden = false;
    }, (err) => {
      if (this.urlPromise === urlPromise) this.image.alt = `The image could not be loaded: ${describeError(err)}`;
    });
  }
}

/**
 * A file about to be sent, shown before any byte is uploaded: a thumbnail for a photo, its name and size, and a
 * caption to go with it. `open` resolves the caption on Send, or null on Cancel (or Escape).
 */
export class AttachDialog {
  /** @param {(caption: string) => string|null} validate why a caption cannot be sent, or null */
  constructor(validate) {
    this.validate = validate;
    this.dialog = $('#attach-dialog');
    this.form = $('#attach-form');
    this.title = $('#attach-title');
    this.thumb = $('#attach-thumb');
    this.icon = $('#attach-icon');
    this.name = $('#attach-name');
    this.size = $('#attach-size');
    this.caption = $('#attach-caption');
    this.error = $('#attach-error');
    this.url = null;
    this.resolve = null;
    this.form.addEventListener('submit', (event) => {
      event.preventDefault();
      const problem = this.validate(this.caption.value);
      if (problem) {
        // Kept open with the caption, to shorten.
        this.error.textContent = problem;
        return;
      }
      this.finish(this.caption.value);
    });
    this.caption.addEventListener('keydown', (event) => {
      // As in the compose box: Enter sends, Shift+Enter adds a line.
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
    // A picture the browser cannot decode still goes as a file: show it as one.
    this.thumb.addEventListener('error', () => this.showThumbnail(false));
    // Cancel, Escape; after a Send this finds nothing left to settle. A dialog opened again meanwhile stays.
    this.dialog.addEventListener('close', () => {
      if (!this.dialog.open) this.finish(null);
    });
  }

  open(file, caption) {
    this.finish(null);
    const image = file.type.startsWith('image/');
    this.title.textContent = image ? 'Send a photo' : 'Send a file';
    this.showThumbnail(image);
    if (image) {
      // The picture as the user picked it, from memory: revoked when the dialog closes.
      this.url = URL.createObjectURL(file);
      this.thumb.src = this.url;
      this.thumb.alt = `Preview of ${file.name}`;
    }
    this.name.textContent = file.name || 'Unnamed file';
    this.size.textContent = formatBytes(file.size);
    this.caption.value = caption;
    this.error.textContent = '';
    this.dialog.showModal();
    this.caption.focus();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  showThumbnail(shown) {
    this.thumb.hidden = !shown;
    this.icon.hidden = shown;
  }

  finish(caption) {
    const resolve = this.resolve;
    this.resolve = null;
    if (this.url) {
      URL.revokeObjectURL(this.url);
      this.url = null;
      this.thumb.removeAttribute('src');
    }
    if (this.dialog.open) this.dialog.close();
    resolve?.(caption);
  }
}

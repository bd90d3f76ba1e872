// Small DOM helpers. Text always goes in as text nodes, never as HTML, so
// nothing a user typed can become markup.

const PROPERTIES = new Set(['value', 'checked', 'hidden', 'disabled', 'textContent']);

/**
 * Create an element: h('button', {class: 'x', onclick: fn, 'aria-label': 'Close'}, 'text', child).
 * `style` is refused on purpose: the Content-Security-Policy forbids inline style attributes.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props ?? {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name === 'dataset') Object.assign(element.dataset, value);
    else if (name.startsWith('on') && typeof value === 'function') element.addEventListener(name.slice(2), value);
    else if (PROPERTIES.has(name)) element[name] = value;
    else if (name === 'style') throw new Error('inline styles are not allowed by the CSP');
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(element, child);
    else if (child instanceof Node) element.append(child);
    else element.append(document.createTextNode(String(child)));
  }
}

export function $(selector, root = document) {
  const element = root.querySelector(selector);
  if (!element) throw new Error(`missing element ${selector}`);
  return element;
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: 'long' });
const dateFormat = new Intl.DateTimeFormat(undefined, { year: 'numeric', month: 'short', day: 'numeric' });

function startOfDay(ms) {
  const date = new Date(ms);
  date.setHours(0, 0, 0, 0);
  return date.getTime();
}

const DAY_MS = 24 * 3600 * 1000;

export function formatTime(ms) {
  return timeFormat.format(new Date(ms));
}

/** "Today", "Yesterday", a weekday within the week, else a date: the day separators of a chat. */
export function formatDay(ms) {
  const days = Math.round((startOfDay(Date.now()) - startOfDay(ms)) / DAY_MS);
  if (days === 0) return 'Today';
  if (days === 1) return 'Yesterday';
  if (days > 1 && days < 7) return dayFormat.format(new Date(ms));
  return dateFormat.format(new Date(ms));
}

export function dayKey(ms) {
  return String(startOfDay(ms));
}

/** The conversation list's time column: a time today, else the day. */
export function formatListTime(ms) {
  if (!ms) return '';
  return startOfDay(ms) === startOfDay(Date.now()) ? formatTime(ms) : formatDay(ms);
}

export function formatLastSeen(ms) {
  const days = Math.round((startOfDay(Date.now()) - startOfDay(ms)) / DAY_MS);
  if (days === 0) return `last seen today at ${formatTime(ms)}`;
  if (days === 1) return `last seen yesterday at ${formatTime(ms)}`;
  return `last seen ${dateFormat.format(new Date(ms))}`;
}

export function formatDateTime(ms) {
  return `${dateFormat.format(new Date(ms))} ${formatTime(ms)}`;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(bytes < 10 * 1024 ? 1 : 0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

export function initial(name) {
  return (name || '?').trim().charAt(0).toUpperCase() || '?';
}

/** A stable hue per name, so each person's avatar keeps its colour. */
export function hueClass(name) {
  let hash = 0;
  for (const char of name || '') hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return `hue-${hash % 8}`;
}

const ERROR_TEXT = {
  network: 'The server cannot be reached. Check your connection.',
  offline: 'You are offline.',
  timeout: 'The server did not answer in time.',
  invalid_username: 'Usernames are 3 to 32 characters: lowercase letters, digits, "_" and ".".',
  invalid_password: 'The password must be at least 8 characters.',
  username_taken: 'That username is taken.',
  wrong_credentials: 'Wrong username or password.',
  account_suspended: 'This account is suspended. Ask the server\'s operator.',
  registration_closed: 'This server does not take new accounts. Ask its operator for one.',
  invite_required: 'This server takes new accounts by invite only. Enter your invite code.',
  invite_invalid: 'That invite code is unknown, already used or expired.',
  too_many_devices: 'This account already has the most devices allowed. Revoke one from another device first.',
  rate_limited: 'Too many attempts. Wait a little and try again.',
  unknown_user: 'There is no user with that name.',
  blocked: 'You cannot message this user.',
  not_member: 'You are not a member of this conversation.',
  not_admin: 'Only group admins can do that.',
  already_member: 'That user is already in the group.',
  unknown_member: 'That user is not in the group.',
  group_full: 'The group is full.',
  not_author: 'You can only change your own messages.',
  edit_window_closed: 'Messages can only be edited for 15 minutes.',
  message_deleted: 'That message was deleted.',
  unknown_message: 'That message is no longer available.',
  unknown_device: 'That device is no longer logged in.',
  media_too_large: 'The file is too large (the limit is 16 MB).',
  media_type_not_allowed: 'This kind of file cannot be sent. Allowed: images, video, audio and PDF.',
  text_too_long: 'The message is too long.',
  client_msg_id_reused: 'This message clashed with one sent earlier and was not sent. Send it again.',
  frame_too_large: 'too large',
  empty_text: 'The message is empty.',
  empty_file: 'The file is empty.',
  encryption_unavailable: 'This browser cannot encrypt, so nothing can be sent into an encrypted chat from it.',
  // An encrypted message's attachment that does not open (filecrypt.js).
  wrong_file: 'The file on the server is not the one that was sent.',
  tampered: 'The file was tampered with.',
  bad_key: 'The message carries no usable key for this file.',
  unavailable: 'The server is busy. Try again in a moment.',
  shutting_down: 'The server is restarting. Try again in a moment.',
};

/** A sentence for an error code; the server's own message is for developers. */
export function describeError(error) {
  return ERROR_TEXT[error?.code] ?? error?.message ?? 'Something went wrong.';
}

// Attachments of encrypted messages, with WebCrypto: each file sealed under a key of its own (AES-256-GCM, a random
// 12-byte IV, the 16-byte tag appended), exactly as missive-e2ee's attachment.rs does it in the CLI and the terminal
// app. The key, the IV (unpadded base64) and the SHA-256 of the ciphertext (hex, as the server's upload answer has it)
// travel inside the encrypted message, never to the server.

/** Why a downloaded file does not open (stable codes, as the CLI names them). */
export class FileError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

const toBase64 = (bytes) => btoa(String.fromCharCode(...bytes)).replace(/=+$/, '');
const toHex = (buffer) => [...new Uint8Array(buffer)].map((byte) => byte.toString(16).padStart(2, '0')).join('');

function fromBase64(text, length) {
  let bytes;
  try {
    bytes = Uint8Array.from(atob(text), (char) => char.charCodeAt(0));
  } catch {
    bytes = null;
  }
  if (!bytes || bytes.length !== length) throw new FileError('bad_key', 'the message’s key for this file is malformed');
  return bytes;
}

/**
 * Seal a file's bytes for upload.
 * @returns {Promise<{ciphertext: Uint8Array, key: {key: string, iv: string, sha256: string}}>}
 */
export async function sealFile(plaintext) {
  const rawKey = crypto.getRandomValues(new Uint8Array(32));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const key = await crypto.subtle.importKey('raw', rawKey, 'AES-GCM', false, ['encrypt']);
  const ciphertext = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, plaintext));
  const sha256 = toHex(await crypto.subtle.digest('SHA-256', ciphertext));
  return { ciphertext, key: { key: toBase64(rawKey), iv: toBase64(iv), sha256 } };
}

/** Open a downloaded file: its hash first (the message names exactly these bytes), then the tag. */
export async function openFile(ciphertext, fileKey) {
  const hash = toHex(await crypto.subtle.digest('SHA-256', ciphertext));
  if (typeof fileKey.sha256 !== 'string' || hash !== fileKey.sha256.toLowerCase()) {
    throw new FileError('wrong_file', 'the file is not the one the message names');
  }
  const rawKey = fromBase64(String(fileKey.key), 32);
  const iv = fromBase64(String(fileKey.iv), 12);
  const key = await crypto.subtle.importKey('raw', rawKey, 'AES-GCM', false, ['decrypt']);
  try {
    return await crypto.subtle.decrypt({ name: 'AES-GCM', iv }, key, ciphertext);
  } catch {
    throw new FileError('tampered', 'the file was tampered with');
  }
}

/** The attachments a decrypted content lists, as the store shows media (with the key kept in `file`). */
export function sharedMedia(files) {
  if (!Array.isArray(files)) return [];
  return files
    .filter((file) => file && typeof file.media_id === 'string' && typeof file.key === 'string'
      && typeof file.iv === 'string' && typeof file.sha256 === 'string')
    .slice(0, 10)
    .map((file) => ({
      media_id: file.media_id,
      content_type: typeof file.content_type === 'string' ? file.content_type : 'application/octet-stream',
      size_bytes: Number.isSafeInteger(file.size_bytes) ? file.size_bytes : 0,
      thumbnail: false,
      ...(typeof file.name === 'string' && file.name ? { filename: file.name } : {}),
      file: { key: file.key, iv: file.iv, sha256: file.sha256 },
    }));
}

/** A shown attachment as the encrypted message lists it (the inverse of `sharedMedia`). */
export function sharedFile(media) {
  const entry = {
    media_id: media.media_id,
    content_type: media.content_type,
    size_bytes: media.size_bytes,
    ...media.file,
  };
  if (media.filename) entry.name = media.filename;
  return entry;
}

// Test harness: a real missive server per test (fresh data dir, port 0),
// Debian's chromium driven by playwright-core, and page helpers that wait
// on conditions, never on the clock.

import { execFile, spawn } from 'node:child_process';
import { mkdtemp, rm, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const execFileAsync = promisify(execFile);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const ARTIFACTS = path.join(REPO_ROOT, 'e2e', 'artifacts');
const BINARY = path.resolve(REPO_ROOT, process.env.MISSIVE_BIN ?? 'target/debug/missive');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const STEP_TIMEOUT_MS = 15000;
const RESTART_ATTEMPTS = 6;

/**
 * The server's environment: nothing inherited from MISSIVE_* except where the web assets come from, plus what a
 * test sets (`extra`, e.g. `{ MISSIVE_DELIVERY__OFFLINE_TTL_SECS: '1' }`).
 */
function serverEnv(extra = {}) {
  const env = { PATH: process.env.PATH, HOME: process.env.HOME, RUST_BACKTRACE: '1' };
  // Serving from disk lets the suite run against edited assets without rebuilding the binary.
  if (process.env.MISSIVE_WEB__ASSETS_DIR) env.MISSIVE_WEB__ASSETS_DIR = process.env.MISSIVE_WEB__ASSETS_DIR;
  // Every test registers a few users from 127.0.0.1; the default is 20 per hour per address.
  env.MISSIVE_LIMITS__REGISTRATIONS_PER_IP_MAX = '1000';
  return { ...env, ...extra };
}

export class Server {
  constructor(dataDir, env = {}) {
    this.dataDir = dataDir;
    this.env = env;
    this.process = null;
    this.address = null;
    this.log = [];
  }

  /** @param {object} [options] @param {Record<string, string>} [options.env] configuration for this server only */
  static async start({ env = {} } = {}) {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'missive-e2e-'));
    const server = new Server(dataDir, env);
    await server.spawn('127.0.0.1:0');
    return server;
  }

  get url() {
    return `http://${this.address}`;
  }

  /** Start the binary and resolve once its log names the bound address. */
  spawn(listen) {
    const child = spawn(BINARY, ['serve', '--listen', listen, '--log-format', 'json', '--data-dir', this.dataDir], {
      env: serverEnv(this.env),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.process = child;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`server did not report its address:\n${this.log.slice(-20).join('\n')}`)), 20000);
      // Keep draining stderr for the whole life of the process, or it would block on a full pipe.
      readline.createInterface({ input: child.stderr }).on('line', (line) => {
        this.log.push(line);
        if (this.log.length > 2000) this.log.shift();
        if (this.process !== child) return;
        try {
          const address = JSON.parse(line)?.fields?.local_addr;
          if (address) {
            this.address = address;
            clearTimeout(timer);
            resolve(address);
          }
        } catch {
          // Not JSON (a panic message): kept in the log for the failure report.
        }
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(new Error(`cannot start ${BINARY} (set MISSIVE_BIN?): ${error.message}`));
      });
      // `close` rather than `exit`: it comes after stderr's last lines, which say why.
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`server exited (${code ?? signal}) before reporting its address:\n${this.log.slice(-20).join('\n')}`));
      });
    });
  }

  async kill() {
    const child = this.process;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }

  /**
   * Come back on the same port with the same data, as after a crash. Another process may have taken the port
   * meanwhile (port 0 handed it out to us once, not for good): then try again a few times.
   */
  async restart() {
    await this.kill();
    const port = this.address.split(':').pop();
    for (let attempt = 1; ; attempt++) {
      try {
        await this.spawn(`127.0.0.1:${port}`);
        return;
      } catch (err) {
        if (attempt >= RESTART_ATTEMPTS || !/address already in use|os error 98/i.test(err.message)) throw err;
        // Pacing between attempts, not synchronisation: nothing tells us when the other process lets go.
        await new Promise((resolve) => setTimeout(resolve, 250 * attempt));
      }
    }
  }

  async stop() {
    await this.kill();
    await rm(this.dataDir, { recursive: true, force: true });
  }

  /** Plain REST, for setting up data faster than through the UI. */
  async rest(method, route, body, token) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch(this.url + route, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await response.text();
    const json = text ? JSON.parse(text) : null;
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return json;
  }

  /** `missive admin ARGS` on this server's store (an operator's command); its JSON output. */
  async admin(args) {
    const { stdout } = await execFileAsync(BINARY, ['admin', '--data-dir', this.dataDir, ...args], { env: serverEnv(this.env) });
    return JSON.parse(stdout);
  }

  async registerAndLogin(username, password = 'correct horse') {
    await this.rest('POST', '/v1/accounts', { username, password });
    return this.rest('POST', '/v1/sessions', { username, password, device_name: 'test' });
  }
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking'],
  });
}

let userCounter = 0;
/** Usernames unique within the run (each test has its own server, but names read better in logs). */
export function username(prefix) {
  userCounter += 1;
  return `${prefix}${userCounter}_${process.pid % 1000}`;
}

/**
 * A browser page that records console errors and warnings and uncaught
 * exceptions; `problems` must be empty at the end of a test. `userAgent` makes it claim to be another browser;
 * `initScript` runs in the page before any of its own scripts (to take away what that browser lacks).
 */
export async function openPage(browser, server, {
  query = '', viewport = { width: 1280, height: 800 }, userAgent = undefined, initScript = undefined,
} = {}) {
  const context = await browser.newContext({ viewport, userAgent });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  if (initScript) await page.addInitScript(initScript);
  page.problems = [];
  page.on('console', (message) => {
    if (message.type() !== 'error' && message.type() !== 'warning') return;
    const where = message.location()?.url;
    page.problems.push(`${message.type()}: ${message.text()}${where ? ` (${where})` : ''}`);
  });
  page.on('pageerror', (error) => page.problems.push(`pageerror: ${error.stack ?? error.message}`));
  await page.goto(`${server.url}/${query}`);
  return page;
}

/**
 * For a deliberate outage: until the returned function is called, the page's new WebSocket attempts are closed
 * by the test (1011) instead of meeting the dead port, which Chromium reports as a console error that no page
 * can prevent. Sockets already open are untouched; the server's death closes them.
 */
export async function holdWebSockets(page) {
  let held = true;
  await page.routeWebSocket(/\/v1\/ws$/, (socket) => {
    if (held) socket.close({ code: 1011, reason: 'server down (held by the test)' });
    else socket.connectToServer();
  });
  return () => {
    held = false;
  };
}

export async function register(page, name, password = 'correct horse') {
  await submitCredentials(page, name, password, 'Create account');
}

export async function login(page, name, password = 'correct horse') {
  await submitCredentials(page, name, password, 'Log in');
}

/** Fill in the start page's form, press `button`, and wait until the page is online as `name`. */
async function submitCredentials(page, name, password, button) {
  await page.getByLabel('Username', { exact: true }).fill(name);
  await page.getByLabel('Password', { exact: true }).fill(password);
  await page.getByRole('button', { name: button }).click();
  await page.getByTestId('me-name').filter({ hasText: name }).waitFor();
  await waitOnline(page);
}

export async function waitOnline(page, transport = null, timeout = STEP_TIMEOUT_MS) {
  const selector = transport
    ? `[data-testid="connection-status"][data-state="online"][data-transport="${transport}"]`
    : '[data-testid="connection-status"][data-state="online"]';
  // Attached, not visible: the bar hides itself while all is well.
  await page.locator(selector).waitFor({ state: 'attached', timeout });
}

export function conversation(page, title) {
  return page.locator(`[data-testid="conversation"][data-title="${title}"]`);
}

export async function startChat(page, name) {
  await page.getByLabel('Start a chat with (username)').fill(name);
  await page.getByRole('button', { name: 'Chat', exact: true }).click();
  await page.getByTestId('chat-title').filter({ hasText: name }).waitFor();
}

export async function openChat(page, title) {
  await conversation(page, title).click();
  await page.getByTestId('chat-title').filter({ hasText: title }).waitFor();
}

export async function sendText(page, text) {
  const input = page.getByLabel('Message', { exact: true });
  await input.fill(text);
  await input.press('Enter');
}

/** The message bubbles in the open chat whose text is exactly `text`. */
export function messages(page, text) {
  return page.locator('[data-testid="message"]').filter({
    has: page.locator('[data-testid="message-text"]', { hasText: new RegExp(`^${escapeRegExp(text)}$`) }),
  });
}

export function escapeRegExp(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Wait until `condition` (sync or async) returns true, checking every 100 ms, for what no page shows (server
 * state through REST, frames a page sent). Fails after `timeout`.
 */
export async function eventually(condition, { timeout = STEP_TIMEOUT_MS, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Wait until a message's ticks show `state` (pending, sent, delivered, read). */
export async function waitTicks(page, text, state, timeout = STEP_TIMEOUT_MS) {
  await messages(page, text).locator(`[data-testid="ticks"][data-state="${state}"]`).waitFor({ timeout });
}

/**
 * Record the frames a page sends over its WebSockets (parsed), from now on; call before the page connects.
 * Returns the live array.
 */
export function recordSentFrames(page) {
  const frames = [];
  page.on('websocket', (socket) => {
    socket.on('framesent', ({ payload }) => {
      try {
        frames.push(JSON.parse(payload));
      } catch {
        frames.push({ unparsed: String(payload) });
      }
    });
  });
  return frames;
}

/** The ack frames among `frames`, each checked to be protocol v2's: `{type, conversation, seq}` and nothing else. */
export function ackFrames(frames) {
  const acks = frames.filter((frame) => frame.type === 'ack');
  for (const ack of acks) {
    if (Object.keys(ack).sort().join(',') !== 'conversation,seq,type' || !Number.isInteger(ack.conversation)
        || !Number.isInteger(ack.seq)) {
      throw new Error(`not a cumulative ack without id: ${JSON.stringify(ack)}`);
    }
  }
  return acks;
}

/** `expected`: patterns of problems the test itself caused (e.g. a refused request's console line). */
export function assertNoProblems(pages, { expected = [] } = {}) {
  const problems = pages.flatMap((page) => page.problems).filter((problem) => !expected.some((pattern) => pattern.test(problem)));
  if (problems.length > 0) throw new Error(`console errors or warnings:\n${problems.join('\n')}`);
}

export async function screenshot(page, name) {
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, name) });
}

/**
 * A valid PNG of `width`×`height`, built by hand (zlib is in node): a colour
 * gradient, or random noise (which does not compress) for a large file.
 */
export async function makePng(width, height, { noise = false } = {}) {
  const { deflateSync } = await import('node:zlib');
  const raw = Buffer.alloc((width * 3 + 1) * height);
  for (let y = 0; y < height; y++) {
    const row = y * (width * 3 + 1);
    raw[row] = 0; // filter: none
    for (let x = 0; x < width; x++) {
      const grain = noise ? Math.floor(Math.random() * 256) : 0;
      raw[row + 1 + x * 3] = noise ? grain : Math.round((x / width) * 255);
      raw[row + 2 + x * 3] = noise ? Math.floor(Math.random() * 256) : Math.round((y / height) * 255);
      raw[row + 3 + x * 3] = noise ? Math.floor(Math.random() * 256) : 160;
    }
  }
  const chunk = (type, data) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([length, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // colour type: RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});

function crc32(buffer) {
  let crc = 0xffffffff;
  for (const byte of buffer) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

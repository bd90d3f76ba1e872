// End-to-end encryption across the three clients: the CLI, this browser app and the terminal app (`missive
// chat`, driven in tmux) in one encrypted group on a real server. Each reads what the others wrote, and no file of
// the server's data directory holds a plaintext.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import readline from 'node:readline';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  Server, launchBrowser, openPage, register, openChat, sendText, messages, eventually, assertNoProblems,
  username, waitTicks, REPO_ROOT,
} from './helpers.mjs';

const execFileAsync = promisify(execFile);
const TEST_TIMEOUT_MS = 120000;
const BINARY = path.resolve(REPO_ROOT, process.env.MISSIVE_BIN ?? 'target/debug/missive');
const PASSWORD = 'correct horse';
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/** The devices whose keys the page's IndexedDB (database missive-keys) holds. */
function devicesWithKeys(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('missive-keys', 1);
    open.onsuccess = () => {
      const all = open.result.transaction('devices').objectStore('devices').getAllKeys();
      all.onsuccess = () => resolve(all.result);
      all.onerror = () => reject(all.error);
    };
    open.onerror = () => reject(open.error);
  }));
}

/**
 * alice registered and logged in with the CLI (her profile named after her), bob registered in `page`, its
 * encryption ready: their names.
 */
async function aliceOnTheCliBobInTheBrowser(config, server, page) {
  const [alice, bob] = [username('alice'), username('bob')];
  await cli(config, server, alice, ['register', alice]);
  await cli(config, server, alice, ['login', alice]);
  await register(page, bob);
  await page.locator('#app-view[data-encryption="ready"]').waitFor({ state: 'attached' });
  return [alice, bob];
}

/**
 * Run `body` with a fresh server, a CLI config directory of its own and one browser page; `running` collects the
 * child processes (with a `kill()`) to stop afterwards. A failure gets the server's last log lines; everything is
 * closed and removed afterwards.
 */
async function withCliAndBrowser(body) {
  const server = await Server.start();
  const config = await mkdtemp(path.join(tmpdir(), 'missive-e2e-cli-'));
  const page = await openPage(browser, server);
  const running = [];
  try {
    await body({ server, config, page, running });
  } catch (err) {
    err.message += `\n--- last server log lines ---\n${server.log.slice(-15).join('\n')}`;
    throw err;
  } finally {
    for (const process of running) process.kill();
    await page.context().close().catch(() => {});
    await server.stop();
    await rm(config, { recursive: true, force: true });
  }
}

/** The CLI as `profile` (its own config directory); its stdout, or it throws with its stderr. */
async function cli(config, server, profile, args) {
  const { stdout } = await execFileAsync(BINARY, [...args, '--profile', profile], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, MISSIVE_CONFIG_DIR: config, MISSIVE_SERVER: server.url, MISSIVE_PASSWORD: PASSWORD },
  });
  return stdout;
}

/** A private tmux server running the terminal app; its screen read as text. */
class Terminal {
  constructor(config, server, profile) {
    this.socket = `missive-e2e-${process.pid}-${profile}`;
    const command = `env LANG=C.UTF-8 LC_ALL=C.UTF-8 MISSIVE_CONFIG_DIR='${config}' MISSIVE_SERVER='${server.url}' '${BINARY}' chat --profile ${profile}`;
    this.tmux(['new-session', '-d', '-s', 'chat', '-x', '110', '-y', '30', command]);
  }

  tmux(args) {
    return execFileSync('tmux', ['-u', '-L', this.socket, '-f', '/dev/null', ...args], {
      env: { ...process.env, LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8' },
    }).toString();
  }

  screen() {
    return this.tmux(['capture-pane', '-p', '-t', 'chat']);
  }

  async waitFor(text) {
    await eventually(() => this.screen().includes(text), { what: `the terminal shows ${JSON.stringify(text)}` });
  }

  keys(...keys) {
    this.tmux(['send-keys', '-t', 'chat', ...keys]);
  }

  type(text) {
    this.tmux(['send-keys', '-t', 'chat', '-l', text]);
  }

  close() {
    try {
      this.tmux(['kill-server']);
    } catch {
      // Already gone.
    }
  }
}

/** Every file under `dir` whose bytes contain `needle`. */
async function filesContaining(dir, needle) {
  const found = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...await filesContaining(file, needle));
    else if ((await readFile(file)).includes(needle)) found.push(file);
  }
  return found;
}

/** The file called `name` under `dir`, at any depth. */
async function fileNamed(dir, name) {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) {
      const found = await fileNamed(file, name);
      if (found) return found;
    } else if (entry.name === name) {
      return file;
    }
  }
  return null;
}

test('the CLI, the browser and the terminal app read each other in one encrypted group', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: interoperability of the three clients' encryption, with the no-plaintext check on the server's files, a
  // tampered ciphertext shown as rejected in the browser, and the browser's keys forgotten at logout.
  await withCliAndBrowser(async ({ server, config, page }) => {
    let terminal = null;
    try {
      const [alice, bob, carol] = [username('alice'), username('bob'), username('carol')];
      for (const user of [alice, carol]) {
        await cli(config, server, user, ['register', user]);
        await cli(config, server, user, ['login', user]);
      }
      const token = JSON.parse(await readFile(path.join(config, 'profiles', `${alice}.json`), 'utf8')).token;
      const asAlice = (route, init = {}) => fetch(`${server.url}${route}`, {
        ...init, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      });
      await register(page, bob);
      await page.locator('#app-view[data-encryption="ready"]').waitFor({ state: 'attached' });
      // The browser publishes its keys when it first comes online.
      await eventually(async () => {
        const listed = await (await asAlice(`/v1/users/${bob}/keys`)).json();
        return listed.devices?.length === 1;
      }, { what: "the browser's keys in the directory" });

      const group = JSON.parse(await cli(config, server, alice, [
        'group', 'create', 'vault', '--member', bob, '--member', carol, '--encrypted',
      ])).conversation;
      await cli(config, server, alice, ['send', '--group', String(group), 'MARKER-e1 from the cli']);

      await openChat(page, 'vault');
      await messages(page, 'MARKER-e1 from the cli').waitFor();
      await page.getByTestId('chat-encrypted').waitFor();
      await sendText(page, 'MARKER-e2 from the browser');
      await waitTicks(page, 'MARKER-e2 from the browser', 'sent');

      terminal = new Terminal(config, server, carol);
      await terminal.waitFor(`online as ${carol}`);
      terminal.keys('Enter');
      await terminal.waitFor('MARKER-e1 from the cli');
      await terminal.waitFor('MARKER-e2 from the browser');
      terminal.type('MARKER-e3 from the terminal');
      terminal.keys('Enter');
      await messages(page, 'MARKER-e3 from the terminal').waitFor();

      const heard = (await cli(config, server, alice, ['listen', '--count', '2', '--idle-secs', '5']))
        .trim().split('\n').map((line) => JSON.parse(line))
        .filter((frame) => frame.kind === 'encrypted')
        .map((frame) => [frame.text, frame.decrypted]);
      assert.deepEqual(heard, [['MARKER-e2 from the browser', true], ['MARKER-e3 from the terminal', true]]);

      for (const marker of ['MARKER-e1', 'MARKER-e2', 'MARKER-e3']) {
        assert.deepEqual(await filesContaining(server.dataDir, marker), [], `${marker} in the server's files`);
      }

      // A ciphertext that does not open is shown as rejected, never as its bytes.
      const forged = await asAlice('/v1/frames', {
        method: 'POST',
        body: JSON.stringify({
          type: 'send', conversation: group, client_msg_id: 'forged-1', encrypted: true,
          text: JSON.stringify({ v: 1, session_id: 'forged', ciphertext: 'AAAA' }),
        }),
      });
      assert.equal(forged.status, 200, await forged.text());
      await messages(page, '⚠ encrypted message rejected: it was tampered with').waitFor();
      assert.equal(await page.getByText('session_id').count(), 0);

      // Logging out takes the device's keys out of this browser.
      await page.getByRole('button', { name: 'Log out' }).click();
      await page.getByRole('dialog').getByRole('button', { name: 'Log out' }).click();
      await page.getByLabel('Username', { exact: true }).waitFor();
      assert.deepEqual(await devicesWithKeys(page), [], 'no keys left in IndexedDB');
      assertNoProblems([page]);
    } catch (err) {
      if (terminal) err.message += `\n--- terminal ---\n${terminal.screen()}`;
      throw err;
    } finally {
      terminal?.close();
    }
  });
});

test('an attachment in an encrypted chat is sealed in the browser and opened by the CLI, and the other way', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: WebCrypto in the browser and missive-e2ee in the CLI seal and open the same files: the upload is
  // ciphertext with no name, the server's files hold neither bytes nor names, the receiver gets the sender's name and
  // the exact bytes, any file type goes (the server never sniffs ciphertext), and a stored copy changed on the
  // server is refused with a message instead of being saved.
  await withCliAndBrowser(async ({ server, config, page }) => {
    const work = await mkdtemp(path.join(tmpdir(), 'missive-e2e-files-'));
    try {
      const [alice, bob] = await aliceOnTheCliBobInTheBrowser(config, server, page);
      const token = JSON.parse(await readFile(path.join(config, 'profiles', `${alice}.json`), 'utf8')).token;
      await eventually(async () => {
        const listed = await (await fetch(`${server.url}/v1/users/${bob}/keys`, { headers: { authorization: `Bearer ${token}` } })).json();
        return listed.devices?.length === 1;
      }, { what: "the browser's keys in the directory" });
      const group = JSON.parse(await cli(config, server, alice, ['group', 'create', 'vault', '--member', bob, '--encrypted'])).conversation;
      await openChat(page, 'vault');
      await page.getByTestId('chat-encrypted').waitFor();
      assert.equal(await page.getByTestId('file-input').getAttribute('accept'), null, 'the picker offers every type');

      const uploads = [];
      page.on('request', (request) => {
        if (request.method() === 'POST' && new URL(request.url()).pathname === '/v1/media') uploads.push(request.url());
      });
      const notes = Buffer.from('MARKER-f1 the plain notes\n'.repeat(300));
      await page.getByTestId('file-input').setInputFiles({ name: 'MARKERNAME-b1.txt', mimeType: 'text/plain', buffer: notes });
      await page.getByLabel('Caption').fill('the notes');
      await page.getByTestId('attach-preview').getByRole('button', { name: 'Send' }).click();
      await waitTicks(page, 'the notes', 'sent');
      assert.deepEqual(uploads.map((url) => new URL(url).search), ['?encrypted=true']);

      const heard = (await cli(config, server, alice, ['listen', '--count', '1', '--idle-secs', '5']))
        .trim().split('\n').map((line) => JSON.parse(line)).find((frame) => frame.kind === 'encrypted');
      assert.equal(heard.text, 'the notes');
      assert.deepEqual([heard.media[0].filename, heard.media[0].content_type, heard.media[0].size_bytes],
        ['MARKERNAME-b1.txt', 'text/plain', notes.length]);
      const copy = path.join(work, 'copy.txt');
      const fetched = JSON.parse(await cli(config, server, alice, ['download', heard.media[0].media_id, '--to', copy]));
      assert.equal(fetched.decrypted, true);
      assert.deepEqual(await readFile(copy), notes);

      // From the CLI to the browser: the link is named as sent, and the download is the plaintext.
      const report = Buffer.concat([Buffer.from('MARKER-f2 '), Buffer.from(Array.from({ length: 4000 }, (_, i) => (i * 7) % 256))]);
      const reportPath = path.join(work, 'MARKERNAME-b2.bin');
      await writeFile(reportPath, report);
      await cli(config, server, alice, ['send', '--group', String(group), '--file', reportPath, 'the report']);
      const link = page.getByTestId('file-link').filter({ hasText: 'MARKERNAME-b2.bin' });
      await link.waitFor();
      const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
      assert.equal(download.suggestedFilename(), 'MARKERNAME-b2.bin');
      assert.deepEqual(await readFile(await download.path()), report);

      for (const marker of ['MARKER-f1', 'MARKER-f2', 'MARKERNAME-b1', 'MARKERNAME-b2']) {
        assert.deepEqual(await filesContaining(server.dataDir, marker), [], `${marker} in the server's files`);
      }

      // The stored ciphertext changed behind the server's back: refused, with a message.
      const mediaId = (await page.getByTestId('file-link').filter({ hasText: 'MARKERNAME-b2.bin' }).getAttribute('href')).split('/').pop();
      const stored = await fileNamed(server.dataDir, mediaId);
      const bytes = await readFile(stored);
      bytes[50] ^= 1;
      await writeFile(stored, bytes);
      let downloads = 0;
      page.on('download', () => { downloads += 1; });
      await link.click();
      await page.getByTestId('toast').filter({ hasText: 'The file on the server is not the one that was sent.' }).waitFor();
      assert.equal(downloads, 0, 'a file that did not open was saved');
      assertNoProblems([page]);
    } finally {
      await rm(work, { recursive: true, force: true });
    }
  });
});

/** `missive verify …` as `profile`, its stdin open: its JSON lines as they come, and a way to answer it. */
function verifyProcess(config, server, profile, args) {
  const child = spawn(BINARY, ['verify', ...args, '--timeout-secs', '60', '--profile', profile], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, MISSIVE_CONFIG_DIR: config, MISSIVE_SERVER: server.url },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const lines = [];
  const waiters = [];
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  readline.createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(JSON.parse(line));
    for (const waiter of waiters.splice(0)) waiter();
  });
  const exited = new Promise((resolve) => child.once('close', (code) => resolve(code)));
  return {
    async line(step) {
      await eventually(() => lines.some((line) => line.verify === step), { what: `missive verify printing ${step}: ${stderr}` });
      return lines.find((line) => line.verify === step);
    },
    answer(text) {
      child.stdin.write(`${text}\n`);
    },
    async exit() {
      const code = await exited;
      return { code, stderr };
    },
    kill() {
      child.kill();
    },
  };
}

test('a CLI user and a browser user verify each other by comparing emoji, and a mismatch verifies nothing', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the short-code verification works across clients in both directions: the same seven emoji on both
  // sides, "verified" shown in the browser's header and listed by the CLI once both confirm; a "no" on one side
  // cancels the other and records nothing.
  await withCliAndBrowser(async ({ server, config, page, running }) => {
    const [alice, bob] = await aliceOnTheCliBobInTheBrowser(config, server, page);
    const bobDevice = await page.evaluate(() => JSON.parse(localStorage.getItem('missive.session')).deviceId);
    await eventually(async () => {
      const status = JSON.parse(await cli(config, server, alice, ['verify', bob, '--status']));
      return status.devices.length === 1;
    }, { what: "the browser's keys in the directory" });
    await cli(config, server, alice, ['send', bob, 'hello, encrypted', '--encrypted']);
    await openChat(page, alice);
    await messages(page, 'hello, encrypted').waitFor();
    await page.locator('[data-testid="verify-state"][data-state="unverified"]').waitFor({ state: 'attached' });

    // The browser starts; the CLI answers "no": nothing is verified on either side.
    const declining = verifyProcess(config, server, alice, ['--accept']);
    running.push(declining);
    await page.getByTestId('verify-button').click();
    const shown = await declining.line('compare');
    const emoji = page.getByTestId('verify-emoji');
    await emoji.waitFor();
    assert.equal(await emoji.getAttribute('data-emoji'), shown.emoji.join(' '));
    declining.answer('n');
    assert.equal((await declining.exit()).code, 1);
    await page.getByTestId('verify-error').filter({ hasText: 'cancelled: mismatch' }).waitFor();
    await page.getByTestId('verify-dialog').getByRole('button', { name: 'Close' }).click();

    // The CLI starts; both say yes.
    const verifying = verifyProcess(config, server, alice, [bob]);
    running.push(verifying);
    await page.getByTestId('verify-dialog').getByRole('button', { name: 'Accept' }).click();
    const code = await verifying.line('compare');
    assert.equal(code.device_id, bobDevice);
    await page.getByTestId('verify-emoji').filter({ visible: true }).waitFor();
    assert.equal(await page.getByTestId('verify-emoji').getAttribute('data-emoji'), code.emoji.join(' '));
    assert.equal(await page.getByTestId('verify-emoji').getAttribute('data-decimals'), code.decimals.join(' '));
    await page.getByRole('button', { name: 'They match' }).click();
    verifying.answer('y');
    const done = await verifying.line('done');
    assert.deepEqual([done.user, done.device_id], [bob, bobDevice]);
    assert.equal((await verifying.exit()).code, 0);
    await page.getByTestId('verify-status').filter({ hasText: 'is verified' }).waitFor();
    await page.getByTestId('verify-dialog').getByRole('button', { name: 'Done' }).click();
    await page.locator('[data-testid="verify-state"][data-state="verified"]').waitFor({ state: 'attached' });
    const status = JSON.parse(await cli(config, server, alice, ['verify', bob, '--status']));
    assert.deepEqual(status.devices.map((device) => device.verified), [true]);

    // A text typed into the encrypted 1:1 is sealed for its two members.
    await sendText(page, 'MARKER-b1 in the 1:1');
    await waitTicks(page, 'MARKER-b1 in the 1:1', 'sent');
    const heard = (await cli(config, server, alice, ['listen', '--idle-secs', '2']))
      .trim().split('\n').map((line) => JSON.parse(line))
      .filter((frame) => frame.kind === 'encrypted')
      .map((frame) => [frame.text, frame.decrypted]);
    assert.deepEqual(heard, [['MARKER-b1 in the 1:1', true]]);
    assertNoProblems([page]);
  });
});

test('a browser verifies a new CLI device of its own account and hands it the keys to read what came before', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: key forwarding from the browser: a device added to an account cannot read an earlier encrypted message until
  // the user verifies it from the browser (the Devices dialog), which then sends it every room key it holds.
  await withCliAndBrowser(async ({ server, config, page, running }) => {
    const [alice, bob] = await aliceOnTheCliBobInTheBrowser(config, server, page);
    await eventually(async () => JSON.parse(await cli(config, server, alice, ['verify', bob, '--status'])).devices.length === 1,
      { what: "the browser's keys in the directory" });
    const group = JSON.parse(await cli(config, server, alice, ['group', 'create', 'vault', '--member', bob, '--encrypted'])).conversation;
    await cli(config, server, alice, ['send', '--group', String(group), 'MARKER-k1 before the laptop']);
    await openChat(page, 'vault');
    await messages(page, 'MARKER-k1 before the laptop').waitFor();

    const laptop = JSON.parse(await cli(config, server, 'laptop', ['login', bob])).device_id;
    const unread = JSON.parse(await cli(config, server, 'laptop', ['history', String(group)])).messages
      .find((message) => message.kind === 'encrypted');
    assert.equal(unread.decrypt_error, 'no_key', 'the new device cannot read it yet');

    const accepting = verifyProcess(config, server, 'laptop', ['--accept']);
    running.push(accepting);
    await page.getByRole('button', { name: 'Devices' }).click();
    await page.getByRole('button', { name: new RegExp(`^Verify .* \\(device ${laptop}\\)$`) }).click();
    const code = await accepting.line('compare');
    await page.getByTestId('verify-emoji').filter({ visible: true }).waitFor();
    assert.equal(await page.getByTestId('verify-emoji').getAttribute('data-emoji'), code.emoji.join(' '));
    await page.getByRole('button', { name: 'They match' }).click();
    accepting.answer('y');
    assert.equal((await accepting.exit()).code, 0);
    await page.getByTestId('verify-status').filter({ hasText: 'Your device is verified. It was handed one room key' }).waitFor();

    // The laptop takes the forwarded key as it listens; its own saved keys then open the earlier message.
    await cli(config, server, 'laptop', ['listen', '--idle-secs', '2']);
    const read = JSON.parse(await cli(config, server, 'laptop', ['history', String(group)])).messages
      .find((message) => message.kind === 'encrypted');
    assert.deepEqual([read.text, read.decrypted], ['MARKER-k1 before the laptop', true]);
    assertNoProblems([page]);
  });
});

test('a browser whose one-time keys were used up while it was away publishes more when it comes back', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: `keys_low` reaches only a connected device, so the browser tops its one-time keys up on connecting.
  const server = await Server.start();
  const page = await openPage(browser, server);
  try {
    const bob = username('bob');
    await register(page, bob);
    await page.locator('#app-view[data-encryption="ready"]').waitFor({ state: 'attached' });
    const token = await page.evaluate(() => JSON.parse(localStorage.getItem('missive.session')).token);
    const keysLeft = async () => (await server.rest('GET', '/v1/keys', undefined, token)).one_time_keys;
    await eventually(async () => (await keysLeft()) === 50, { what: 'the first 50 keys published' });
    await page.goto('about:blank');
    const alice = username('alice');
    await server.rest('POST', '/v1/accounts', { username: alice, password: PASSWORD });
    const { token: aliceToken } = await server.rest('POST', '/v1/sessions', { username: alice, password: PASSWORD });
    for (let i = 0; i < 35; i++) await server.rest('POST', '/v1/keys/claim', { user: bob }, aliceToken);
    assert.equal(await keysLeft(), 15);
    await page.goto(server.url);
    await eventually(async () => (await keysLeft()) === 65, { what: 'the browser publishing 50 more' });
    assertNoProblems([page]);
  } finally {
    await page.context().close().catch(() => {});
    await server.stop();
  }
});

// Browser tests of the web app against a real server: each test starts its
// own server (fresh data directory, port 0) and drives Debian's chromium
// through playwright-core. Run: node --test e2e/

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  Server, launchBrowser, openPage, register, login, startChat, openChat, sendText, messages, waitTicks,
  waitOnline, conversation, assertNoProblems, screenshot, makePng, username, holdWebSockets, recordSentFrames,
  ackFrames, eventually,
} from './helpers.mjs';

const TEST_TIMEOUT_MS = 120000;
let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

/**
 * Run `body` with a fresh server (configured with `env`, if given); close every page it opened and stop the
 * server afterwards.
 */
async function withServer(body, { env = {} } = {}) {
  const server = await Server.start({ env });
  const pages = [];
  const open = async (options) => {
    const page = await openPage(browser, server, options);
    pages.push(page);
    return page;
  };
  try {
    await body({ server, open, pages });
  } catch (err) {
    err.message += `\n--- last server log lines ---\n${server.log.slice(-15).join('\n')}`;
    throw err;
  } finally {
    for (const page of pages) await page.context().close().catch(() => {});
    await server.stop();
  }
}

/** Two users on pages of their own, each registered: alice and bob, and their (fresh) names. */
async function aliceAndBob(open) {
  const alice = await open();
  const bob = await open();
  const aliceName = username('alice');
  const bobName = username('bob');
  await register(alice, aliceName);
  await register(bob, bobName);
  return { alice, bob, aliceName, bobName };
}

/**
 * alice writes `text` to bob, who reads it; once every page's chat list has settled, the server is killed, both
 * pages' new WebSocket attempts held (see holdWebSockets): the functions that release them.
 */
async function readThenServerDown({ server, pages, alice, bob, aliceName, bobName }, text) {
  await startChat(alice, bobName);
  await sendText(alice, text);
  await openChat(bob, aliceName);
  await waitTicks(alice, text, 'read');
  // Settle first: a list refresh already due would otherwise meet the dead server and log a failed request.
  for (const page of pages) await page.locator('[data-testid="conversation-list"][data-syncing="false"]').waitFor();

  const releases = [await holdWebSockets(alice), await holdWebSockets(bob)];
  await server.kill();
  return releases;
}

/** Through `cdp` (a page's CDP session), add `latency` ms to requests and cap uploads at `bytesPerSecond` (-1: no cap). */
function limitUploads(cdp, latency, bytesPerSecond) {
  return cdp.send('Network.emulateNetworkConditions', {
    offline: false, latency, downloadThroughput: -1, uploadThroughput: bytesPerSecond,
  });
}

/** From now on the page keeps in `window.revokedUrls` every URL it revokes. */
function recordRevokedUrls(page) {
  return page.evaluate(() => {
    window.revokedUrls = [];
    const revoke = URL.revokeObjectURL.bind(URL);
    URL.revokeObjectURL = (url) => {
      window.revokedUrls.push(url);
      revoke(url);
    };
  });
}

/** The page's session token, for REST calls as that user. */
function tokenOf(page) {
  return page.evaluate(() => JSON.parse(localStorage.getItem('missive.session')).token);
}

/** The ticks of a conversation's list item (its last message, when that is ours). */
function listTicks(page, title, state) {
  return conversation(page, title).locator(`[data-testid="ticks"][data-state="${state}"]`);
}

async function messageMenu(page, text) {
  await messages(page, text).hover();
  await messages(page, text).getByTestId('message-options').click();
  return page.getByTestId('message-menu');
}

test('two users chat both ways: ticks, typing, presence, reply, react, edit, delete', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the everyday 1:1 flow end to end, with each live update observed in the other browser.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);

    // Bob closes the app, so Alice's first message can only be stored: one tick.
    await bob.goto('about:blank');
    await startChat(alice, bobName);
    await alice.getByTestId('chat-presence').filter({ hasText: /last seen/ }).waitFor();
    await sendText(alice, 'Hello Bob');
    await waitTicks(alice, 'Hello Bob', 'sent');

    // Bob comes back: his device receives and acks it, so Alice sees two ticks, then blue ones once he opens the chat.
    await bob.goto(server.url + '/');
    await waitOnline(bob);
    await waitTicks(alice, 'Hello Bob', 'delivered');
    await alice.getByTestId('chat-presence').filter({ hasText: /^online$/ }).waitFor();
    // One unread message: the badge, the item's label and the page title each say 1 once the list settles.
    const badge = conversation(bob, aliceName).getByTestId('unread-badge');
    await badge.filter({ hasText: /^1$/ }).waitFor();
    await bob.locator('[data-testid="conversation-list"][data-syncing="false"]').waitFor();
    assert.equal(await badge.textContent(), '1');
    assert.match(await conversation(bob, aliceName).getAttribute('aria-label'), /, 1 unread,/);
    assert.equal(await bob.title(), '(1) missive');
    await openChat(bob, aliceName);
    await messages(bob, 'Hello Bob').waitFor();
    await waitTicks(alice, 'Hello Bob', 'read');
    await conversation(bob, aliceName).and(bob.locator('[data-unread="0"]')).waitFor();

    // Typing shows on the other side and ends with the message.
    await bob.getByLabel('Message', { exact: true }).pressSequentially('Hi Al', { delay: 20 });
    await alice.getByTestId('typing-indicator').filter({ hasText: 'typing…' }).waitFor();
    await bob.getByLabel('Message', { exact: true }).fill('Hi Alice');
    await bob.getByLabel('Message', { exact: true }).press('Enter');
    await messages(alice, 'Hi Alice').waitFor();
    await alice.getByTestId('typing-indicator').waitFor({ state: 'hidden' });
    await waitTicks(bob, 'Hi Alice', 'read');

    // Reply.
    await (await messageMenu(alice, 'Hi Alice')).getByRole('menuitem', { name: 'Reply' }).click();
    await alice.getByTestId('compose-context').filter({ hasText: 'Hi Alice' }).waitFor();
    await sendText(alice, 'Replying now');
    await messages(bob, 'Replying now').getByTestId('quote').filter({ hasText: 'Hi Alice' }).waitFor();

    // React, by keyboard alone: the options button opens the menu with the first reaction focused.
    await messages(bob, 'Replying now').getByTestId('message-options').focus();
    await bob.keyboard.press('Enter');
    await bob.getByRole('menuitemcheckbox', { name: 'React with 👍' }).and(bob.locator(':focus')).waitFor();
    await bob.keyboard.press('Enter');
    await messages(alice, 'Replying now').getByTestId('reactions').filter({ hasText: '👍' }).waitFor();
    await bob.getByTestId('message-menu').waitFor({ state: 'hidden' });

    // Edit.
    await (await messageMenu(alice, 'Hello Bob')).getByRole('menuitem', { name: 'Edit' }).click();
    const input = alice.getByLabel('Message', { exact: true });
    assert.equal(await input.inputValue(), 'Hello Bob');
    await input.fill('Hello Bob, edited');
    await input.press('Enter');
    await messages(bob, 'Hello Bob, edited').getByTestId('edited').waitFor();
    await messages(bob, 'Hello Bob').waitFor({ state: 'detached' });

    await alice.mouse.move(0, 0);
    await screenshot(alice, 'chat.png');

    // Delete for everyone.
    await sendText(alice, 'Sent by mistake');
    await messages(bob, 'Sent by mistake').waitFor();
    await (await messageMenu(alice, 'Sent by mistake')).getByRole('menuitem', { name: 'Delete for everyone' }).click();
    await alice.getByRole('button', { name: 'Delete for everyone' }).click();
    await messages(bob, 'Sent by mistake').waitFor({ state: 'detached' });
    await messages(bob, 'This message was deleted').waitFor();
    assert.equal(await messages(bob, 'This message was deleted').count(), 1);
    assert.equal(await messages(bob, 'Replying now').count(), 1);
    assertNoProblems(pages);
  });
});

test('ticks follow the receipt cursors: delivered once the other page opens, read once read, the same after a reload', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: protocol v2's cursors. Bob's device acks the conversation once for the burst it got (cumulative, no id);
  // Alice's ticks move with the `delivered` and `read` cursor frames; and since those are live only, a reload
  // shows the same ticks from GET /v1/conversations alone, message by message.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    await bob.goto('about:blank');

    const texts = ['cursor one', 'cursor two', 'cursor three'];
    await startChat(alice, bobName);
    for (const text of texts) await sendText(alice, text);
    for (const text of texts) await waitTicks(alice, text, 'sent');

    // Bob's page opens: his device gets the three messages and acks them; nothing is read yet.
    const bobFrames = recordSentFrames(bob);
    await bob.goto(server.url + '/');
    await waitOnline(bob);
    for (const text of texts) await waitTicks(alice, text, 'delivered');
    await listTicks(alice, bobName, 'delivered').waitFor();
    const [summary] = (await server.rest('GET', '/v1/conversations', undefined, await tokenOf(bob))).conversations;
    assert.equal(summary.last_seq, 3);
    const acks = ackFrames(bobFrames);
    assert.deepEqual(acks, [{ type: 'ack', conversation: summary.conversation, seq: 3 }], 'one ack for the burst, up to its last seq');

    // A reload shows "delivered" again: the list's cursors, not a frame (the cursor did not move since).
    await alice.reload();
    await waitOnline(alice);
    for (const text of texts) await waitTicks(alice, text, 'delivered');
    await listTicks(alice, bobName, 'delivered').waitFor();

    await openChat(bob, aliceName);
    for (const text of texts) await waitTicks(alice, text, 'read');
    await listTicks(alice, bobName, 'read').waitFor();
    assert.equal(ackFrames(bobFrames).length, 1, 'reading and the cursor frames are not acked');

    // Bob is gone, so no cursor frame can reach Alice any more; a later message of hers stays at one tick.
    await bob.goto('about:blank');
    await sendText(alice, 'cursor four');
    await waitTicks(alice, 'cursor four', 'sent');
    const listed = alice.waitForResponse((response) => new URL(response.url()).pathname === '/v1/conversations');
    await alice.reload();
    const { conversations } = await (await listed).json();
    assert.deepEqual(conversations[0].receipts, [{ user: bobName, delivered_seq: 3, read_seq: 3 }]);
    await waitOnline(alice);
    for (const text of texts) await waitTicks(alice, text, 'read');
    await waitTicks(alice, 'cursor four', 'sent');
    await listTicks(alice, bobName, 'sent').waitFor();
    assertNoProblems(pages);
  });
});

test('messages that expire before they reach a device leave a note in its chat, and are acked past', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the `expired` frame. Bob's device is away while Alice's messages outlive the offline TTL and the history
  // retention (1 s each here); when it comes back, the chat says what it missed, the device acks past the gap, and
  // what comes next shows after the note.
  const env = {
    MISSIVE_DELIVERY__OFFLINE_TTL_SECS: '1',
    MISSIVE_DELIVERY__HISTORY_RETENTION: '1s',
    MISSIVE_DELIVERY__SWEEP_INTERVAL_SECS: '1',
  };
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    await bob.goto('about:blank');

    await startChat(alice, bobName);
    await sendText(alice, 'gone 1');
    await sendText(alice, 'gone 2');
    await waitTicks(alice, 'gone 2', 'sent');
    const aliceToken = await tokenOf(alice);
    const [{ conversation: id }] = (await server.rest('GET', '/v1/conversations', undefined, aliceToken)).conversations;
    // The sweeper has deleted them once history no longer has them; by then they are past the TTL too.
    await eventually(async () => {
      const page = await server.rest('GET', `/v1/conversations/${id}/messages`, undefined, aliceToken);
      return page.messages.length === 0;
    }, { timeout: 30000, what: 'the sweeper to delete the messages' });

    const bobFrames = recordSentFrames(bob);
    await bob.goto(server.url + '/');
    await waitOnline(bob);
    await openChat(bob, aliceName);
    await bob.getByTestId('expired-note').filter({ hasText: /^2 messages expired before they reached this device$/ }).waitFor();
    assert.equal(await bob.getByTestId('message').count(), 0);
    await eventually(() => ackFrames(bobFrames).some((ack) => ack.conversation === id && ack.seq === 2),
      { what: 'an ack of the expired range' });

    await sendText(alice, 'after the gap');
    await messages(bob, 'after the gap').waitFor();
    const order = await bob.locator('#message-list > li:not(.day)')
      .evaluateAll((items) => items.map((item) => item.dataset.testid));
    assert.deepEqual(order, ['expired-note', 'message']);
    assertNoProblems(pages);
  }, { env });
});

test('a group of three: create, chat, read ticks, remove a member, leave', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: group conversations work for every member, and membership changes reach everyone.
  await withServer(async ({ open, pages }) => {
    const [a, b, c] = [await open(), await open(), await open()];
    const [aName, bName, cName] = [username('ann'), username('ben'), username('cat')];
    await register(a, aName);
    await register(b, bName);
    await register(c, cName);

    await a.getByRole('button', { name: 'New group' }).click();
    await a.getByLabel('Group name').fill('Trip');
    await a.getByLabel('Members').fill(`${bName}, ${cName}`);
    await a.getByRole('button', { name: 'Create group' }).click();
    await a.getByTestId('chat-title').filter({ hasText: 'Trip' }).waitFor();
    await a.getByTestId('system-message').filter({ hasText: 'You created group “Trip”' }).waitFor();

    await openChat(b, 'Trip');
    await openChat(c, 'Trip');
    await sendText(a, 'Group hello');
    await messages(b, 'Group hello').waitFor();
    await messages(c, 'Group hello').waitFor();
    await waitTicks(a, 'Group hello', 'read');

    await sendText(c, 'From Cat');
    await messages(a, 'From Cat').getByText(cName).waitFor();
    await messages(b, 'From Cat').waitFor();

    // Ann removes Cat; Cat's chat says so and offers no composer.
    await a.getByRole('button', { name: 'Group info' }).click();
    const info = a.getByTestId('group-info');
    await info.getByTestId('group-member').nth(2).waitFor();
    assert.equal(await info.getByTestId('group-member').count(), 3);
    await info.getByRole('button', { name: `Remove ${cName}` }).click();
    await info.locator(`[data-testid="group-member"][data-username="${cName}"]`).waitFor({ state: 'detached' });
    await info.getByRole('button', { name: 'Close' }).click();
    await c.getByTestId('system-message').filter({ hasText: `removed you` }).waitFor();
    await c.getByText('You are no longer a member of this group.').waitFor();
    await b.getByTestId('system-message').filter({ hasText: `removed ${cName}` }).waitFor();

    // Ben leaves.
    await b.getByRole('button', { name: 'Group info' }).click();
    await b.getByRole('button', { name: 'Leave group' }).click();
    await b.getByRole('button', { name: 'Leave', exact: true }).click();
    await a.getByTestId('system-message').filter({ hasText: `${bName} left` }).waitFor();
    await b.getByText('You are no longer a member of this group.').waitFor();

    await sendText(a, 'Anyone left?');
    await waitTicks(a, 'Anyone left?', 'sent');
    // Stored first, the group message would reach Cat's device no later than a 1:1 message from Ann sent after it.
    await startChat(a, cName);
    await sendText(a, 'Just for Cat');
    await conversation(c, aName).filter({ hasText: 'Just for Cat' }).waitFor();
    assert.equal(await c.getByText('Anyone left?').count(), 0, 'a removed member gets nothing more from the group');
    assertNoProblems(pages);
  });
});

test('an uploaded image shows as a thumbnail on the other side, with the full image on click', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: media upload with progress, display through authenticated fetches, and a clear refusal of a too-large file.
  await withServer(async ({ open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    await startChat(alice, bobName);
    await sendText(alice, 'A picture follows');
    await openChat(bob, aliceName);

    // Slow uploads down so the progress bar is observable.
    const cdp = await alice.context().newCDPSession(alice);
    await cdp.send('Network.enable');
    await limitUploads(cdp, 20, 256 * 1024);
    const png = await makePng(640, 480, { noise: true });
    assert.ok(png.length > 400 * 1024, `the PNG is ${png.length} bytes; it must take a while to upload`);
    await alice.getByTestId('file-input').setInputFiles({ name: 'photo.png', mimeType: 'image/png', buffer: png });
    await alice.getByTestId('attach-preview').getByRole('button', { name: 'Send' }).click();
    await alice.getByTestId('upload-status').waitFor();
    await alice.waitForFunction(() => {
      const value = document.querySelector('[data-testid="upload-progress"]').value;
      return value > 0 && value < 1;
    });
    await alice.getByTestId('upload-status').waitFor({ state: 'hidden', timeout: 30000 });
    await limitUploads(cdp, 0, -1);

    const thumbnail = bob.getByTestId('thumbnail').last();
    await thumbnail.waitFor();
    await bob.waitForFunction(() => {
      const img = [...document.querySelectorAll('[data-testid="thumbnail"]')].pop();
      return img && img.complete && img.naturalWidth > 0;
    });
    const thumbWidth = await thumbnail.evaluate((img) => img.naturalWidth);
    assert.ok(thumbWidth <= 320, `thumbnail ${thumbWidth}px wide`);
    await thumbnail.click();
    await bob.waitForFunction(() => document.querySelector('[data-testid="image-full"]').naturalWidth === 640);
    const fullSrc = await bob.getByTestId('image-full').getAttribute('src');
    // Record what the page revokes, to see the dialog let its blob: URL go.
    await recordRevokedUrls(bob);
    await bob.getByRole('dialog', { name: 'Image' }).getByRole('button', { name: 'Close' }).click();
    // The full-size image (up to 16 MiB) is let go with the dialog.
    await bob.waitForFunction(() => !document.querySelector('[data-testid="image-full"]').hasAttribute('src'));
    await bob.waitForFunction((url) => window.revokedUrls.includes(url), fullSrc);
    await waitTicks(alice, 'A picture follows', 'read');
    await alice.locator('[data-testid="message"][data-tick="read"]').getByTestId('thumbnail').waitFor();

    // Other media are download links, named as they were sent.
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n');
    await alice.getByTestId('file-input').setInputFiles({ name: 'Q3 notes.pdf', mimeType: 'application/pdf', buffer: pdf });
    await alice.getByTestId('attach-preview').getByRole('button', { name: 'Send' }).click();
    const link = bob.getByTestId('file-link');
    await link.filter({ hasText: 'Q3 notes.pdf' }).waitFor();
    const [download] = await Promise.all([bob.waitForEvent('download'), link.click()]);
    assert.equal(download.suggestedFilename(), 'Q3 notes.pdf');
    const { readFile } = await import('node:fs/promises');
    assert.deepEqual(await readFile(await download.path()), pdf);

    // A type the server would refuse is refused at once, without a preview.
    await alice.getByTestId('file-input').setInputFiles({ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('hello') });
    await alice.getByTestId('composer-error').filter({ hasText: /“notes\.txt” was not sent\. This kind of file cannot be sent/ }).waitFor();

    // Over the limit: refused before any byte is sent, with a message that says why.
    await alice.getByTestId('file-input').setInputFiles({
      name: 'huge.png', mimeType: 'image/png', buffer: Buffer.alloc(16 * 1024 * 1024 + 1),
    });
    await alice.getByTestId('composer-error').filter({ hasText: /“huge\.png” was not sent\. The file is too large/ }).waitFor();
    assert.equal(await bob.getByTestId('thumbnail').count(), 1);

    // After a reload the list still says what the last message carried.
    await bob.reload();
    await waitOnline(bob);
    await conversation(bob, aliceName).getByTestId('conversation-preview').filter({ hasText: '📎 Q3 notes.pdf' }).waitFor();
    assertNoProblems(pages);
  });
});

test('after a server restart nothing is lost: messages written offline arrive exactly once', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: reconnect with backoff and the persistent outbox. The server is killed, both users write while it is
  // down, and after it returns on the same port every message arrives once, in both directions.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    const releases = await readThenServerDown({ server, pages, alice, bob, aliceName, bobName }, 'before the restart');
    for (const page of [alice, bob]) {
      await page.locator('[data-testid="connection-status"][data-state="offline"]').waitFor();
    }
    // Cut off, alice cannot know whether bob is still online: she is not told he is.
    await alice.locator('[data-testid="chat-presence"][data-online="false"]').waitFor({ state: 'attached' });
    assert.notEqual(await alice.getByTestId('chat-presence').textContent(), 'online');
    await sendText(alice, 'written offline 1');
    await sendText(alice, 'written offline 2');
    await sendText(bob, 'bob offline too');
    await waitTicks(alice, 'written offline 2', 'pending');
    await alice.getByTestId('connection-status').filter({ hasText: '2 waiting to send' }).waitFor();
    const stored = await alice.evaluate(() => Object.keys(localStorage)
      .filter((key) => key.startsWith('missive.outbox.'))
      .flatMap((key) => JSON.parse(localStorage.getItem(key)).map((entry) => entry.frame.text)));
    assert.deepEqual(stored, ['written offline 1', 'written offline 2']);

    await server.restart();
    for (const release of releases) release();
    await waitOnline(alice, null, 30000);
    await waitOnline(bob, null, 30000);
    await alice.getByTestId('chat-presence').filter({ hasText: /^online$/ }).waitFor();

    await waitTicks(alice, 'written offline 2', 'read');
    await waitTicks(alice, 'written offline 1', 'read');
    await messages(alice, 'bob offline too').waitFor();
    for (const text of ['before the restart', 'written offline 1', 'written offline 2']) {
      assert.equal(await messages(bob, text).count(), 1, `${text} shown once`);
    }
    assert.equal(await messages(alice, 'bob offline too').count(), 1);
    assert.equal(await alice.evaluate(() => Object.keys(localStorage).filter((key) => key.startsWith('missive.outbox.')).length), 0);

    // The server agrees: one stored copy of each, in the order written.
    const token = await tokenOf(bob);
    const { conversations } = await server.rest('GET', '/v1/conversations', undefined, token);
    const history = await server.rest('GET', `/v1/conversations/${conversations[0].conversation}/messages?limit=50`, undefined, token);
    const texts = history.messages.map((message) => message.text).reverse();
    assert.deepEqual(texts.filter((text) => text.startsWith('written offline')), ['written offline 1', 'written offline 2']);
    assert.equal(texts.filter((text) => text === 'bob offline too').length, 1);

    // A reload rebuilds the chat from history: still exactly once.
    await bob.reload();
    await waitOnline(bob);
    await openChat(bob, aliceName);
    await messages(bob, 'written offline 2').waitFor();
    assert.equal(await messages(bob, 'written offline 1').count(), 1);
    assertNoProblems(pages);
  });
});

test('a text over the limit is refused in the composer; a too-large queued frame fails alone; an unknown user is named', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: nothing the user writes can block the outbox. A text over 65,536 bytes never leaves the composer; a
  // frame over the server's 256 KiB (closed with 1009) fails for good while what waits behind it is delivered;
  // and a name nobody has is refused before any chat is opened, without adding anyone as a contact.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    await startChat(alice, bobName);

    const input = alice.getByLabel('Message', { exact: true });
    await input.fill('x'.repeat(70000));
    await input.press('Enter');
    await alice.getByTestId('composer-error').filter({ hasText: /too long to send: 68 KB, and the limit is 64 KB/ }).waitFor();
    assert.equal((await input.inputValue()).length, 70000, 'the text stays in the composer, to shorten');
    assert.equal(await alice.getByTestId('message').count(), 0, 'nothing was queued');
    await sendText(alice, 'a normal message');
    await alice.getByTestId('composer-error').waitFor({ state: 'hidden' });
    await openChat(bob, aliceName);
    await messages(bob, 'a normal message').waitFor();

    // Addresses in a text are links that open apart from the app; nothing but http(s) becomes one, and the
    // sentence's punctuation stays out of the link.
    await sendText(alice, 'see https://example.com/a_(b). or javascript:alert(1)');
    const linked = messages(bob, 'see https://example.com/a_(b). or javascript:alert(1)');
    await linked.waitFor();
    const links = linked.getByTestId('message-link');
    assert.equal(await links.count(), 1, 'only the https address is a link');
    assert.equal(await links.getAttribute('href'), 'https://example.com/a_(b)');
    assert.equal(await links.getAttribute('target'), '_blank');
    assert.equal(await links.getAttribute('rel'), 'noopener noreferrer');
    assert.equal(await linked.getByTestId('message-text').textContent(),
      'see https://example.com/a_(b). or javascript:alert(1)', 'the text reads as it was written');
    await waitTicks(alice, 'a normal message', 'read');

    // An outbox from elsewhere (an older version, another tab) holding a 300 KB text, then a normal one.
    await alice.evaluate(() => {
      const session = JSON.parse(localStorage.getItem('missive.session'));
      const conversation = Number(decodeURIComponent(location.hash.split('/').pop()));
      const entry = (text, n) => ({
        frame: { type: 'send', conversation, client_msg_id: `e2e-big-${n}`, text },
        convKey: String(conversation),
        createdMs: Date.now() + n,
      });
      localStorage.setItem(`missive.outbox.${session.username}.${session.deviceId}`,
        JSON.stringify([entry('y'.repeat(300 * 1024), 0), entry('behind the big one', 1)]));
    });
    await alice.reload();
    await messages(bob, 'behind the big one').waitFor();
    await alice.locator('[data-testid="message"][data-status="failed"]').filter({ hasText: 'Not sent: too large' }).waitFor();
    await waitTicks(alice, 'behind the big one', 'read');
    assert.equal(await bob.getByTestId('message').count(), 3, 'only the three normal messages reached Bob');

    // Nobody is called that: said under the box before any chat is opened or listed, and the name stays to fix.
    await alice.getByLabel('Start a chat with (username)').fill('nosuchuser');
    await alice.getByRole('button', { name: 'Chat', exact: true }).click();
    await alice.getByTestId('new-chat-error').filter({ hasText: 'There is no user with that name.' }).waitFor();
    assert.equal(await conversation(alice, 'nosuchuser').count(), 0, 'no chat was added for nobody');
    assert.equal(await alice.getByLabel('Start a chat with (username)').inputValue(), 'nosuchuser');
    await alice.getByTestId('chat-title').filter({ hasText: bobName }).waitFor();
    const token = await tokenOf(alice);
    assert.deepEqual((await server.rest('GET', '/v1/contacts', undefined, token)).users, [], 'starting chats added no contact');
    assertNoProblems(pages);
  });
});

test('messages waiting in the outbox survive a reload while the server is down, and arrive once', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the outbox lives in localStorage, not in the page. Two messages are written while the server is down,
  // the page is reloaded (which cannot even load the app then), and after the restart both arrive exactly once.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    const releases = await readThenServerDown({ server, pages, alice, bob, aliceName, bobName }, 'before the outage');
    await alice.locator('[data-testid="connection-status"][data-state="offline"]').waitFor();
    await sendText(alice, 'queued 1');
    await sendText(alice, 'queued 2');
    await alice.getByTestId('connection-status').filter({ hasText: '2 waiting to send' }).waitFor();
    const chatUrl = alice.url();
    await assert.rejects(alice.reload(), /ERR_CONNECTION_REFUSED/);
    // The browser's error page commits after the failed reload; a navigation started before that is cut short.
    await alice.waitForURL((url) => url.protocol === 'chrome-error:');

    await server.restart();
    for (const release of releases) release();
    await alice.goto(chatUrl);
    await waitOnline(alice, null, 30000);
    await waitOnline(bob, null, 30000);
    await waitTicks(alice, 'queued 2', 'read');
    await waitTicks(alice, 'queued 1', 'read');
    for (const text of ['before the outage', 'queued 1', 'queued 2']) {
      assert.equal(await messages(bob, text).count(), 1, `${text} shown once to Bob`);
      assert.equal(await messages(alice, text).count(), 1, `${text} shown once to Alice`);
    }
    assert.equal(await alice.evaluate(() => Object.keys(localStorage).filter((key) => key.startsWith('missive.outbox.')).length), 0);

    const token = await tokenOf(bob);
    const { conversations } = await server.rest('GET', '/v1/conversations', undefined, token);
    const history = await server.rest('GET', `/v1/conversations/${conversations[0].conversation}/messages?limit=50`, undefined, token);
    assert.deepEqual(history.messages.map((message) => message.text).reverse(), ['before the outage', 'queued 1', 'queued 2']);
    assertNoProblems(pages);
  });
});

test('three messages waiting for a closed app show as 3 unread, also after a reload', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the conversation list and the queued messages that follow it are not counted twice.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);

    await bob.goto('about:blank');
    await startChat(alice, bobName);
    for (let i = 1; i <= 3; i++) await sendText(alice, `waiting ${i}`);
    await waitTicks(alice, 'waiting 3', 'sent');

    const badge = conversation(bob, aliceName).getByTestId('unread-badge');
    const settled = async () => {
      await badge.filter({ hasText: /^3$/ }).waitFor();
      await bob.locator('[data-testid="conversation-list"][data-syncing="false"]').waitFor();
      assert.equal(await badge.textContent(), '3');
      assert.equal(await bob.title(), '(3) missive');
    };
    // The list first, then the queued messages (the order that used to count them twice): Bob's WebSocket is
    // held off until his list shows the chat.
    let listed = false;
    await bob.routeWebSocket(/\/v1\/ws$/, (socket) => {
      if (listed) socket.connectToServer();
      else socket.close({ code: 1011, reason: 'held off by the test' });
    });
    await bob.goto(server.url + '/');
    await conversation(bob, aliceName).waitFor();
    listed = true;
    await waitOnline(bob, null, 30000);
    // Delivered: Bob's device has taken in all three queued messages, as well as the list.
    await waitTicks(alice, 'waiting 3', 'delivered');
    await settled();
    await bob.reload();
    await waitOnline(bob);
    await settled();

    await openChat(bob, aliceName);
    await waitTicks(alice, 'waiting 3', 'read');
    await badge.waitFor({ state: 'detached' });
    assert.equal(await bob.title(), 'missive');
    assertNoProblems(pages);
  });
});

test('forced long-polling (?transport=poll) carries the whole chat', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: with the WebSocket ruled out, sending, receiving, ticks and typing work over /v1/poll and /v1/frames,
  // and each poll acks what the previous ones brought.
  await withServer(async ({ server, open, pages }) => {
    const alice = await open({ query: '?transport=poll' });
    const bob = await open({ query: '?transport=poll' });
    const sockets = [];
    const polls = new Map(pages.map((page) => [page, []])); // page -> the bodies of its polls
    for (const page of pages) {
      page.on('websocket', (socket) => sockets.push(socket.url()));
      page.on('request', (request) => {
        if (new URL(request.url()).pathname === '/v1/poll') polls.get(page).push(request.postDataJSON());
      });
    }
    const aliceName = username('alice');
    const bobName = username('bob');
    await register(alice, aliceName);
    await register(bob, bobName);
    await waitOnline(alice, 'poll');
    await waitOnline(bob, 'poll');
    assert.equal(await alice.getByTestId('connection-status').isVisible(), false, 'no bar while connected');

    // Keyboard only: the form field, Enter, then typing straight into the composer, which has the focus.
    await alice.getByLabel('Start a chat with (username)').focus();
    await alice.keyboard.type(bobName);
    await alice.keyboard.press('Enter');
    await alice.getByTestId('chat-title').filter({ hasText: bobName }).waitFor();
    await alice.getByLabel('Message', { exact: true }).and(alice.locator(':focus')).waitFor();
    await alice.keyboard.type('polled hello');
    await alice.keyboard.press('Enter');
    await waitTicks(alice, 'polled hello', 'delivered');
    await openChat(bob, aliceName);
    await waitTicks(alice, 'polled hello', 'read');
    await bob.getByLabel('Message', { exact: true }).pressSequentially('typing over HTTP', { delay: 20 });
    await alice.getByTestId('typing-indicator').filter({ hasText: 'typing…' }).waitFor();
    await bob.getByLabel('Message', { exact: true }).press('Enter');
    await messages(alice, 'typing over HTTP').waitFor();
    await waitTicks(bob, 'typing over HTTP', 'read');
    for (let i = 1; i <= 5; i++) await sendText(alice, `burst ${i}`);
    await messages(bob, 'burst 5').waitFor();
    for (let i = 1; i <= 5; i++) assert.equal(await messages(bob, `burst ${i}`).count(), 1);
    assert.deepEqual(sockets, [], 'no WebSocket was opened');

    // Each poll acks, per conversation, what the ones before it brought; there is no cursor any more.
    const [summary] = (await server.rest('GET', '/v1/conversations', undefined, await tokenOf(bob))).conversations;
    const acked = () => Math.max(0, ...polls.get(bob).flatMap((body) => body.acks ?? [])
      .filter((ack) => ack.conversation === summary.conversation).map((ack) => ack.seq));
    await eventually(() => acked() === summary.last_seq, { what: `Bob's polls to ack seq ${summary.last_seq}` });
    for (const body of [...polls.get(alice), ...polls.get(bob)]) {
      assert.deepEqual(Object.keys(body).filter((key) => key !== 'acks' && key !== 'timeout_ms'), [], JSON.stringify(body));
      for (const ack of body.acks ?? []) assert.deepEqual(Object.keys(ack).sort(), ['conversation', 'seq']);
    }
    assertNoProblems(pages);
  });
});

test('automatic mode falls back to long-polling when WebSockets fail, and returns to them', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: a network that breaks WebSockets still gets a working chat, and the app moves back to the WebSocket once
  // it works again. Playwright's WebSocket routing plays the broken network: refused sockets, then pass-through.
  await withServer(async ({ open, pages }) => {
    // The first WebSocket probe 500 ms after falling back (doubling from there), not 5 s.
    const alice = await open({ query: '?probe_ms=500' });
    const bob = await open();
    const aliceName = username('alice');
    const bobName = username('bob');
    await register(bob, bobName);

    let blocked = true;
    let refused = 0;
    await alice.routeWebSocket(/\/v1\/ws$/, (socket) => {
      if (blocked) {
        refused += 1;
        socket.close({ code: 1011, reason: 'blocked by the test' });
      } else {
        socket.connectToServer();
      }
    });
    await register(alice, aliceName);
    await waitOnline(alice, 'poll', 30000);
    assert.ok(refused >= 2, `${refused} WebSocket attempts refused before falling back`);

    await startChat(alice, bobName);
    await sendText(alice, 'sent while polling');
    await openChat(bob, aliceName);
    await waitTicks(alice, 'sent while polling', 'read');
    await sendText(bob, 'answer to a poller');
    await messages(alice, 'answer to a poller').waitFor();

    blocked = false;
    await waitOnline(alice, 'ws', 60000);
    await sendText(alice, 'back on the socket');
    await messages(bob, 'back on the socket').waitFor();
    await sendText(bob, 'welcome back');
    await messages(alice, 'welcome back').waitFor();
    for (const text of ['sent while polling', 'back on the socket']) assert.equal(await messages(bob, text).count(), 1);
    assert.equal(await messages(alice, 'answer to a poller').count(), 1);
    assertNoProblems(pages);
  });
});

test('history pages in on scroll-up, and the phone layout shows one pane at a time', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: a device that logs in later reads old messages through history paging; at phone width the list and the
  // chat take turns, with a back button.
  await withServer(async ({ server, open, pages }) => {
    const aliceName = username('alice');
    const bobName = username('bob');
    await server.registerAndLogin(aliceName);
    const bobSession = await server.registerAndLogin(bobName);
    const total = 95;
    for (let i = 1; i <= total; i++) {
      await server.rest('POST', '/v1/frames',
        { type: 'send', id: `s${i}`, to: aliceName, client_msg_id: `seed-${i}`, text: `old message ${i}` }, bobSession.token);
    }

    const alice = await open({ viewport: { width: 390, height: 780 } });
    await login(alice, aliceName);
    const item = conversation(alice, bobName);
    await item.filter({ hasText: `old message ${total}` }).waitFor();
    assert.equal(await alice.getByRole('region', { name: 'Chat', exact: true }).isVisible(), false, 'phone width: the list alone');
    await item.click();
    await messages(alice, `old message ${total}`).waitFor();
    assert.equal(await alice.getByTestId('conversation-list').isVisible(), false, 'phone width: the chat alone');
    assert.equal(await messages(alice, 'old message 1').count(), 0, 'the first page holds only the newest messages');

    // Scroll up until the oldest message is in.
    await alice.waitForFunction(() => {
      const box = document.querySelector('[data-testid="messages"]');
      box.scrollTop = 0;
      box.dispatchEvent(new Event('scroll'));
      return [...document.querySelectorAll('[data-testid="message-text"]')].some((p) => p.textContent === 'old message 1');
    }, null, { polling: 200 });
    assert.equal(await alice.getByTestId('message').count(), total, 'every message once');
    const order = await alice.getByTestId('message-text').allTextContents();
    assert.deepEqual(order, Array.from({ length: total }, (_, i) => `old message ${i + 1}`));

    await alice.getByTestId('messages').evaluate((box) => { box.scrollTop = box.scrollHeight; });
    await sendText(alice, 'Read them all');
    await waitTicks(alice, 'Read them all', 'sent');
    await screenshot(alice, 'chat-phone.png');
    await alice.getByRole('button', { name: 'Back to chats' }).click();
    await alice.getByTestId('conversation-list').waitFor();
    await item.filter({ hasText: 'Read them all' }).waitFor();
    await screenshot(alice, 'list-phone.png');
    assertNoProblems(pages);
  });
});

test('devices: list, revoke another browser, log out', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: each browser login is its own device; revoking one logs that browser out at once.
  await withServer(async ({ open, pages }) => {
    const laptop = await open();
    const phone = await open();
    const name = username('dana');
    await register(laptop, name);
    await login(phone, name);

    await laptop.getByRole('button', { name: 'Devices' }).click();
    const list = laptop.getByTestId('device-list');
    await list.getByTestId('device').nth(1).waitFor();
    assert.equal(await list.getByTestId('device').count(), 2);
    assert.equal(await list.locator('[data-current="true"]').count(), 1);
    await list.locator('[data-current="false"]').getByRole('button', { name: /^Revoke/ }).click();
    await laptop.getByRole('button', { name: 'Revoke', exact: true }).click();
    await list.locator('[data-current="false"]').waitFor({ state: 'detached' });
    assert.equal(await list.getByTestId('device').count(), 1);
    await laptop.getByRole('dialog', { name: 'Your devices' }).getByRole('button', { name: 'Close' }).click();

    await phone.getByRole('button', { name: 'Log in' }).waitFor();
    await phone.getByTestId('auth-error').filter({ hasText: 'logged out' }).waitFor();

    await laptop.getByRole('button', { name: 'Log out' }).click();
    await laptop.getByRole('dialog').getByRole('button', { name: 'Log out' }).click();
    await laptop.getByRole('button', { name: 'Log in' }).waitFor();
    assert.equal(await laptop.evaluate(() => localStorage.getItem('missive.session')), null);
    await login(laptop, name);
    assertNoProblems(pages);
  });
});

const FIREFOX_ON_WINDOWS = 'Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0';

test('devices are named after their browser and system, and can be renamed', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: a person with several devices can tell them apart: each login names its browser and system, and a
  // device can be given a name of one's own, which the server keeps.
  await withServer(async ({ server, open, pages }) => {
    const laptop = await open();
    // Firefox has no navigator.userAgentData; without this, Chromium would keep telling its own under the override.
    const firefox = await open({
      userAgent: FIREFOX_ON_WINDOWS,
      initScript: () => Object.defineProperty(Navigator.prototype, 'userAgentData', { get: () => undefined }),
    });
    const name = username('erin');
    await register(laptop, name);
    await login(firefox, name);

    await laptop.getByRole('button', { name: 'Devices' }).click();
    const dialog = laptop.getByRole('dialog', { name: 'Your devices' });
    const list = laptop.getByTestId('device-list');
    const other = list.locator('[data-current="false"]').getByTestId('device-name');
    await other.waitFor();
    assert.match(await list.locator('[data-current="true"]').getByTestId('device-name').textContent(), /^(Chromium|Chrome) on Linux$/);
    assert.equal(await other.textContent(), 'Firefox on Windows');

    // Other browsers and systems, as their user agents describe them.
    const named = await laptop.evaluate(async (agents) => {
      const { deviceName } = await import('/api.js');
      return agents.map((agent) => deviceName(agent));
    }, [
      { userAgent: 'Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1' },
      { userAgent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15' },
      { userAgent: 'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0' },
      { userAgent: 'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Mobile Safari/537.36' },
      { userAgent: 'Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36' },
      { userAgent: 'Mozilla/5.0 (Windows NT 10.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36 OPR/112.0.0.0' },
      { userAgent: '', userAgentData: { brands: [{ brand: 'Not/A)Brand' }, { brand: 'Microsoft Edge' }, { brand: 'Chromium' }], platform: 'macOS' } },
      { userAgent: 'curl/8.5.0' },
    ]);
    assert.deepEqual(named, [
      'Safari on iOS', 'Safari on macOS', 'Edge on Windows', 'Chrome on Android', 'Chrome on ChromeOS', 'Opera on Windows',
      'Edge on macOS', 'Browser',
    ]);

    // Renamed in the dialog: the list shows the new name, also after reopening, and so does the device itself.
    await list.getByRole('button', { name: 'Rename Firefox on Windows' }).click();
    const field = list.getByRole('textbox', { name: 'New name for Firefox on Windows' });
    assert.equal(await field.inputValue(), 'Firefox on Windows');
    await field.fill('Work laptop');
    await field.press('Enter');
    await other.filter({ hasText: /^Work laptop$/ }).waitFor();
    await screenshot(laptop, 'devices.png');
    await dialog.getByRole('button', { name: 'Close' }).click();
    await laptop.getByRole('button', { name: 'Devices' }).click();
    await other.filter({ hasText: /^Work laptop$/ }).waitFor();
    await firefox.getByRole('button', { name: 'Devices' }).click();
    await firefox.getByTestId('device-list').locator('[data-current="true"]').getByTestId('device-name')
      .filter({ hasText: /^Work laptop$/ }).waitFor();

    // Escape leaves the renaming, not the dialog; an empty name is explained, not sent.
    await list.getByRole('button', { name: 'Rename Work laptop' }).click();
    await list.getByRole('textbox', { name: 'New name for Work laptop' }).press('Escape');
    await list.getByRole('button', { name: 'Rename Work laptop' }).waitFor();
    assert.equal(await dialog.isVisible(), true);
    await list.getByRole('button', { name: 'Rename Work laptop' }).click();
    await list.getByRole('textbox', { name: 'New name for Work laptop' }).fill('   ');
    await list.getByRole('button', { name: 'Save' }).click();
    await dialog.getByRole('alert').filter({ hasText: 'A device name is 1 to 64 characters' }).waitFor();

    // Revoked elsewhere meanwhile: the refusal is a sentence, and the device leaves the list.
    const deviceId = await firefox.evaluate(() => JSON.parse(localStorage.getItem('missive.session')).deviceId);
    await server.rest('DELETE', `/v1/devices/${deviceId}`, undefined, await tokenOf(laptop));
    await list.getByRole('textbox', { name: 'New name for Work laptop' }).fill('Old laptop');
    await list.getByRole('button', { name: 'Save' }).click();
    await dialog.getByRole('alert').filter({ hasText: 'That device is no longer logged in.' }).waitFor();
    await list.locator('[data-current="false"]').waitFor({ state: 'detached' });
    assert.equal(await list.getByTestId('device').count(), 1);
    assertNoProblems(pages, { expected: [/status of 404/] });
  });
});

test('the search field filters the chat list by name and last message, and clearing it shows all again', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: with many chats, a person finds one by whom it is with, the group's name or what was said last.
  await withServer(async ({ server, open, pages }) => {
    const aliceName = username('alice');
    const bobName = username('bob');
    const carolName = username('carol');
    const alice = await server.registerAndLogin(aliceName);
    const bob = await server.registerAndLogin(bobName);
    const carol = await server.registerAndLogin(carolName);
    let sent = 0;
    const say = (session, target, text) => {
      sent += 1;
      return server.rest('POST', '/v1/frames', { type: 'send', id: `s${sent}`, client_msg_id: `c${sent}`, text, ...target }, session.token);
    };
    await say(bob, { to: aliceName }, 'See you at the Station');
    await say(carol, { to: aliceName }, 'Lunch tomorrow?');
    const group = await server.rest('POST', '/v1/groups', { name: 'Book club', members: [bobName, carolName] }, alice.token);
    await say(carol, { conversation: group.conversation }, 'Chapter five by Thursday');

    const page = await open();
    await login(page, aliceName);
    const titles = () => page.getByTestId('conversation').evaluateAll((items) => items.map((item) => item.dataset.title).sort());
    const shows = async (expected) => {
      await eventually(async () => JSON.stringify(await titles()) === JSON.stringify([...expected].sort()),
        { what: `the list to show ${expected.join(', ') || 'nothing'}` });
    };
    await shows([bobName, carolName, 'Book club']);
    const search = page.getByRole('searchbox', { name: 'Search chats' });
    const noMatch = page.getByText('No chats match', { exact: true });

    await search.fill(bobName.toUpperCase());
    await shows([bobName]);
    await search.fill('station');
    await shows([bobName]);
    await search.fill('LUNCH');
    await shows([carolName]);
    await search.fill('book');
    await shows(['Book club']);
    await search.fill('thursday');
    await shows(['Book club']);
    assert.equal(await noMatch.isVisible(), false);

    await search.fill('no such chat');
    await noMatch.waitFor();
    await shows([]);
    await search.fill('');
    await shows([bobName, carolName, 'Book club']);
    assert.equal(await noMatch.isVisible(), false);

    // Escape clears it too, and a filtered item still opens its chat.
    await search.fill('lunch');
    await shows([carolName]);
    await openChat(page, carolName);
    await search.press('Escape');
    await shows([bobName, carolName, 'Book club']);
    assert.equal(await search.inputValue(), '');
    assertNoProblems(pages);
  });
});

test('searching a chat finds messages across its whole history, newest first, and shows a loaded one in the log', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the server searches history the page never loaded; results come a page at a time ("Search older"),
  // with the match marked, and picking one that is loaded brings it into view.
  await withServer(async ({ server, open, pages }) => {
    const aliceName = username('alice');
    const bobName = username('bob');
    await server.registerAndLogin(aliceName);
    const bob = await server.registerAndLogin(bobName);
    // 60 messages, the even ones with the word (in capitals) and one with markup-like text: 30 to find.
    const texts = Array.from({ length: 60 }, (_, i) => {
      const n = i + 1;
      if (n === 58) return '<b>needle</b> & <i>co</i>';
      return n % 2 === 0 ? `Found the NEEDLE in hay ${n}` : `plain hay ${n}`;
    });
    for (const [i, text] of texts.entries()) {
      await server.rest('POST', '/v1/frames', { type: 'send', id: `s${i}`, to: aliceName, client_msg_id: `seed-${i}`, text }, bob.token);
    }
    const found = texts.filter((text) => /needle/i.test(text)).reverse();

    const page = await open();
    await login(page, aliceName);
    await openChat(page, bobName);
    await messages(page, texts[59]).waitFor();
    assert.equal(await messages(page, texts[1]).count(), 0, 'the oldest messages are not loaded');

    await page.getByRole('button', { name: 'Search messages' }).click();
    const box = page.getByRole('searchbox', { name: 'Search in this chat' });
    await box.fill('needle');
    await box.press('Enter');
    const results = page.getByTestId('search-result');
    const status = page.getByTestId('search-status');
    await status.filter({ hasText: '20 messages found so far' }).waitFor();
    assert.deepEqual(await page.getByTestId('search-result-text').allTextContents(), found.slice(0, 20), 'newest first');
    // The sender and the match, marked in the text as it was written (no markup made of it).
    assert.equal(await results.first().locator('mark').textContent(), 'NEEDLE');
    const markup = results.filter({ hasText: '<b>needle</b> & <i>co</i>' });
    assert.equal(await markup.locator('mark').textContent(), 'needle');
    assert.equal(await markup.locator('b, i').count(), 0);
    assert.match(await results.first().textContent(), new RegExp(`^${bobName}`));

    await page.getByRole('button', { name: 'Search older' }).click();
    await status.filter({ hasText: /^30 messages found$/ }).waitFor();
    assert.deepEqual(await page.getByTestId('search-result-text').allTextContents(), found);
    assert.equal(await page.getByRole('button', { name: 'Search older' }).isVisible(), false);
    await screenshot(page, 'chat-search.png');

    // One that is not loaded (the log has the newest 40) stays in the results, which say so.
    await results.filter({ hasText: /NEEDLE in hay 2$/ }).click();
    await status.filter({ hasText: 'further back than the chat has loaded' }).waitFor();
    assert.equal(await messages(page, 'Found the NEEDLE in hay 2').count(), 0);

    // A result that is loaded: the log scrolls to it and marks it for a moment.
    const target = messages(page, 'Found the NEEDLE in hay 24');
    const inView = () => page.evaluate((text) => {
      const log = document.querySelector('[data-testid="messages"]').getBoundingClientRect();
      const item = [...document.querySelectorAll('[data-testid="message"]')].find((node) => node.textContent.includes(text));
      const rect = item.getBoundingClientRect();
      return rect.top >= log.top && rect.bottom <= log.bottom;
    }, 'Found the NEEDLE in hay 24');
    assert.equal(await inView(), false, 'out of view before');
    await results.filter({ hasText: 'Found the NEEDLE in hay 24' }).click();
    await target.and(page.locator('[data-found]')).waitFor();
    assert.equal(await inView(), true, 'scrolled into view');
    await target.and(page.locator('[data-found]')).waitFor({ state: 'detached' });

    // Nothing to find; Escape closes the bar, and the close button too.
    await box.fill('zebra');
    await box.press('Enter');
    await status.filter({ hasText: /^No messages found$/ }).waitFor();
    assert.equal(await results.count(), 0);
    assert.equal(await page.getByRole('button', { name: 'Search older' }).isVisible(), false);
    await box.press('Escape');
    await page.getByTestId('chat-search').waitFor({ state: 'hidden' });
    await page.getByRole('button', { name: 'Search messages' }).click();
    assert.equal(await box.inputValue(), '', 'a closed search starts afresh');
    await page.getByRole('button', { name: 'Close search' }).click();
    await page.getByTestId('chat-search').waitFor({ state: 'hidden' });
    assertNoProblems(pages);
  });
});

test('registration by invite: the page asks for a code, explains a missing or bad one, takes an operator\'s', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the sign-in page follows the server's registration mode: an invite field only when invites are
  // required, a sentence (not a code) for each refusal, and an operator's code works once; a closed server
  // offers no sign-up at all.
  await withServer(async ({ server, open, pages }) => {
    const page = await open();
    const invite = page.getByLabel('Invite code');
    await invite.waitFor();
    const name = username('ivy');
    await page.getByLabel('Username', { exact: true }).fill(name);
    await page.getByLabel('Password', { exact: true }).fill('correct horse');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByTestId('auth-error').filter({ hasText: 'by invite only' }).waitFor();
    await invite.fill('not-a-code');
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByTestId('auth-error').filter({ hasText: 'unknown, already used or expired' }).waitFor();
    const { invites } = await server.admin(['invite']);
    assert.equal(invites.length, 1);
    await invite.fill(invites[0]);
    await page.getByRole('button', { name: 'Create account' }).click();
    await page.getByTestId('me-name').filter({ hasText: name }).waitFor();
    assertNoProblems(pages, { expected: [/status of 403/] });
  }, { env: { MISSIVE_REGISTRATION__MODE: 'invite' } });

  await withServer(async ({ open }) => {
    const page = await open();
    await page.getByText('Accounts on this server are created by its operator').waitFor();
    assert.equal(await page.getByRole('button', { name: 'Create account' }).isVisible(), false);
    assert.equal(await page.getByLabel('Invite code').isVisible(), false);
  }, { env: { MISSIVE_REGISTRATION__MODE: 'closed' } });
});

/** True when two boxes ({x, y, width, height}) share no area. */
function apart(a, b) {
  return a.x + a.width <= b.x || b.x + b.width <= a.x || a.y + a.height <= b.y || b.y + b.height <= a.y;
}

/** Open a message's menu and check that it shows whole, inside the viewport, and leaves the message uncovered. */
async function assertMenuBesideMessage(page, text) {
  const menu = await messageMenu(page, text);
  await menu.waitFor();
  const menuBox = await menu.boundingBox();
  const bubbleBox = await messages(page, text).boundingBox();
  assert.ok(apart(menuBox, bubbleBox), `the menu ${JSON.stringify(menuBox)} covers “${text}” ${JSON.stringify(bubbleBox)}`);
  const { width, height } = page.viewportSize();
  assert.ok(menuBox.x >= 0 && menuBox.y >= 0 && menuBox.x + menuBox.width <= width && menuBox.y + menuBox.height <= height,
    `the menu ${JSON.stringify(menuBox)} is outside the ${width}×${height} viewport`);
  return menu;
}

test('the message menu opens beside its message, never over it, and copies the text', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the menu leaves the message it acts on in view, on a wide screen and on a phone, for our messages and
  // others', and "Copy" puts the text on the clipboard.
  await withServer(async ({ open, pages }) => {
    const alice = await open();
    const bob = await open({ viewport: { width: 390, height: 844 } });
    const aliceName = username('alice');
    const bobName = username('bob');
    await register(alice, aliceName);
    await register(bob, bobName);
    await alice.context().grantPermissions(['clipboard-read', 'clipboard-write']);

    await startChat(alice, bobName);
    await sendText(alice, 'Copy me, please');
    // Long enough to fill a phone's bubble, so the menu cannot go beside it there.
    const long = `A long line from Alice that takes the whole width of a phone ${'and then some more '.repeat(4)}end`;
    await sendText(alice, long);
    await conversation(bob, aliceName).click();
    await messages(bob, long).waitFor();
    await sendText(bob, 'A reply to copy');
    await messages(alice, 'A reply to copy').waitFor();

    for (const [page, text] of [[alice, 'Copy me, please'], [alice, 'A reply to copy'], [bob, long], [bob, 'A reply to copy']]) {
      const menu = await assertMenuBesideMessage(page, text);
      await page.keyboard.press('Escape');
      await menu.waitFor({ state: 'hidden' });
    }

    const menu = await assertMenuBesideMessage(alice, 'A reply to copy');
    await menu.getByRole('menuitem', { name: 'Copy' }).click();
    await menu.waitFor({ state: 'hidden' });
    await alice.getByTestId('toast').filter({ hasText: 'Message copied' }).waitFor();
    assert.equal(await alice.evaluate(() => navigator.clipboard.readText()), 'A reply to copy');
    assertNoProblems(pages);
  });
});

test('the compose box keeps its height on a wide screen and a phone, also after an unknown user', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: the message field stays one full line tall (it used to shrink to its padding, ~20 px, when the chat
  // it belongs to was shown after being hidden: the first chat opened, or one opened after a refused name).
  await withServer(async ({ open, pages }) => {
    const bobName = username('bob');
    const bob = await open();
    await register(bob, bobName);
    for (const viewport of [{ width: 1280, height: 800 }, { width: 390, height: 844 }]) {
      const page = await open({ viewport });
      await register(page, username('alice'));
      const phone = viewport.width < 760;
      const field = page.getByLabel('Message', { exact: true });
      const assertTall = async (when) => {
        await field.waitFor();
        const { height } = await field.boundingBox();
        assert.ok(height >= 40, `${viewport.width}px wide, ${when}: the compose box is ${height}px tall`);
        const composer = await page.locator('#composer').boundingBox();
        assert.ok(composer.height >= 40, `${viewport.width}px wide, ${when}: the composer is ${composer.height}px tall`);
      };

      await startChat(page, bobName);
      await assertTall('in the first chat opened');
      await sendText(page, 'hello');
      await messages(page, 'hello').and(page.locator('[data-status="sent"]')).waitFor();
      await assertTall('after sending');

      // A name nobody has, refused under the box.
      if (phone) await page.getByRole('button', { name: 'Back to chats' }).click();
      await page.getByLabel('Start a chat with (username)').fill('nosuchuser');
      await page.getByRole('button', { name: 'Chat', exact: true }).click();
      await page.getByTestId('new-chat-error').filter({ hasText: 'There is no user with that name.' }).waitFor();
      if (phone) await openChat(page, bobName);
      await assertTall('after a refused name');

      // A link to a chat with nobody: its first message finds no such user and the chat closes to writing.
      await page.evaluate(() => { location.hash = '#/chat/u%3Anosuchuser'; });
      await sendText(page, 'anyone there?');
      await page.getByTestId('chat-note').filter({ hasText: 'No user named nosuchuser' }).waitFor();
      await page.evaluate(() => { location.hash = '#/'; });
      await openChat(page, bobName);
      await assertTall('after a chat with an unknown user');
      // Several lines grow the box, and it comes back to one line once they are sent.
      await field.fill('one\ntwo\nthree');
      assert.ok((await field.boundingBox()).height > 60, 'three lines make the box taller');
      await field.press('Enter');
      await assertTall('after sending three lines');
    }
    assertNoProblems(pages);
  });
});

/** Hand the page `file` ({name, type, base64}) as the user's browser would: dropped onto `selector`, or pasted into it. */
async function dropOrPaste(page, how, selector, file) {
  await page.evaluate(({ how, selector, file }) => {
    const bytes = Uint8Array.from(atob(file.base64), (char) => char.charCodeAt(0));
    const data = new DataTransfer();
    data.items.add(new File([bytes], file.name, { type: file.type }));
    const target = document.querySelector(selector);
    const init = { bubbles: true, cancelable: true };
    if (how === 'paste') {
      target.dispatchEvent(new ClipboardEvent('paste', { ...init, clipboardData: data }));
      return;
    }
    for (const type of ['dragenter', 'dragover', 'drop']) target.dispatchEvent(new DragEvent(type, { ...init, dataTransfer: data }));
  }, { how, selector, file });
}

test('a picked, dropped or pasted photo waits in a preview with a caption; only Send sends it', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: no file leaves before the user has seen what it is. The preview shows the picture, its name and size,
  // and takes what the compose box held as the caption; Cancel sends nothing, Send sends the photo with the caption.
  await withServer(async ({ open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    const uploads = [];
    alice.on('request', (request) => {
      if (request.method() === 'POST' && new URL(request.url()).pathname === '/v1/media') uploads.push(request.url());
    });
    await startChat(alice, bobName);
    await sendText(alice, 'Photos follow');
    await openChat(bob, aliceName);
    await messages(bob, 'Photos follow').waitFor();

    const png = await makePng(64, 48);
    const preview = alice.getByTestId('attach-preview');
    const input = alice.getByLabel('Message', { exact: true });
    const assertPreview = async (name, caption) => {
      await preview.getByTestId('attach-name').filter({ hasText: new RegExp(`^${name.replace('.', '\\.')}$`) }).waitFor();
      assert.equal(await preview.getByTestId('attach-size').textContent(), `${(png.length / 1024).toFixed(1)} KB`);
      await alice.waitForFunction(() => document.querySelector('[data-testid="attach-thumbnail"]').naturalWidth === 64);
      assert.ok(await preview.getByTestId('attach-thumbnail').isVisible(), 'the picture shows');
      assert.equal(await preview.getByLabel('Caption').inputValue(), caption);
    };

    // Picked, then cancelled: nothing is uploaded, and the compose box keeps its text.
    await input.fill('The lake at dusk');
    await alice.getByTestId('file-input').setInputFiles({ name: 'lake.png', mimeType: 'image/png', buffer: png });
    await assertPreview('lake.png', 'The lake at dusk');
    await preview.getByRole('button', { name: 'Cancel' }).click();
    await preview.waitFor({ state: 'hidden' });
    assert.equal(await input.inputValue(), 'The lake at dusk');
    assert.deepEqual(uploads, [], 'nothing was uploaded');

    // Picked again, the caption changed, sent: Bob gets the photo with the caption as its text.
    await alice.getByTestId('file-input').setInputFiles({ name: 'lake.png', mimeType: 'image/png', buffer: png });
    await assertPreview('lake.png', 'The lake at dusk');
    await preview.getByLabel('Caption').fill('The lake at dusk, from the hill');
    await preview.getByRole('button', { name: 'Send' }).click();
    await preview.waitFor({ state: 'hidden' });
    assert.equal(await input.inputValue(), '', 'the compose box is cleared: its text went as the caption');
    const sent = messages(bob, 'The lake at dusk, from the hill');
    await sent.getByTestId('thumbnail').waitFor();
    await bob.waitForFunction(() => {
      const img = document.querySelector('[data-testid="thumbnail"]');
      return img?.complete && img.naturalWidth > 0;
    });
    assert.equal(uploads.length, 1);

    // Dropped onto the chat: the same preview, and Escape sends nothing either.
    const file = { name: 'dropped.png', type: 'image/png', base64: png.toString('base64') };
    await dropOrPaste(alice, 'drop', '[data-testid="messages"]', file);
    await assertPreview('dropped.png', '');
    await alice.keyboard.press('Escape');
    await preview.waitFor({ state: 'hidden' });

    // Pasted into the compose box: previewed with what was typed, and sent on Enter in the caption.
    await input.fill('Pasted one');
    await dropOrPaste(alice, 'paste', '#message-input', { ...file, name: 'pasted.png' });
    await assertPreview('pasted.png', 'Pasted one');
    await preview.getByLabel('Caption').press('Enter');
    await messages(bob, 'Pasted one').getByTestId('thumbnail').waitFor();
    assert.equal(uploads.length, 2, 'the dropped photo was not uploaded');
    assert.equal(await bob.getByTestId('thumbnail').count(), 2);

    // A PDF goes through the same preview: its name and size, no picture.
    const pdf = Buffer.from('%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n');
    await alice.getByTestId('file-input').setInputFiles({ name: 'plan.pdf', mimeType: 'application/pdf', buffer: pdf });
    await preview.getByTestId('attach-name').filter({ hasText: /^plan\.pdf$/ }).waitFor();
    assert.equal(await preview.getByTestId('attach-size').textContent(), `${pdf.length} B`);
    assert.equal(await preview.getByTestId('attach-thumbnail').isVisible(), false, 'no picture for a PDF');
    await preview.getByRole('button', { name: 'Send' }).click();
    await bob.getByTestId('file-link').filter({ hasText: 'plan.pdf' }).waitFor();
    assertNoProblems(pages);
  });
});

test('a thumbnail that failed while the server was down loads once the connection is back', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: a photo is not left broken for the page's life because its thumbnail was asked for just as the server
  // died: the failure is not cached, and the picture is fetched again on reconnect.
  await withServer(async ({ server, open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    await startChat(alice, bobName);
    await alice.getByLabel('Message', { exact: true }).fill('Held photo');
    await alice.getByTestId('file-input').setInputFiles({ name: 'held.png', mimeType: 'image/png', buffer: await makePng(64, 48) });
    await alice.getByTestId('attach-preview').getByRole('button', { name: 'Send' }).click();
    await conversation(bob, aliceName).filter({ hasText: 'Held photo' }).waitFor();

    // Bob's request for the thumbnail is held until the server is gone, then let through to meet the dead port.
    let thumbnailRequested;
    const held = new Promise((resolve) => { thumbnailRequested = resolve; });
    const thumbnailRoute = /\/v1\/media\/[^/]+\/thumbnail$/;
    await bob.route(thumbnailRoute, (route) => thumbnailRequested(route));
    await openChat(bob, aliceName);
    const route = await held;
    for (const page of pages) await page.locator('[data-testid="conversation-list"][data-syncing="false"]').waitFor();
    const releases = [await holdWebSockets(alice), await holdWebSockets(bob)];
    await server.kill();
    await bob.locator('[data-testid="connection-status"][data-state="offline"]').waitFor();
    await route.continue();
    await bob.unroute(thumbnailRoute);
    const thumbnail = messages(bob, 'Held photo').getByTestId('thumbnail');
    await thumbnail.and(bob.getByAltText('The photo could not be loaded')).waitFor();

    await server.restart();
    for (const release of releases) release();
    await waitOnline(bob, null, 30000);
    await thumbnail.and(bob.getByAltText(`Photo from ${aliceName}`)).waitFor();
    await bob.waitForFunction(() => {
      const img = document.querySelector('[data-testid="thumbnail"]');
      return img?.complete && img.naturalWidth > 0;
    });
    assertNoProblems(pages, { expected: [/ERR_CONNECTION_REFUSED/] });
  });
});

/**
 * Installed before the page's scripts: a window.Notification that records what the page does with it (permission
 * "default" until requestPermission grants it), and a document whose visibility the test sets with setHidden().
 */
function fakeNotificationsAndVisibility() {
  window.notificationLog = { requests: 0, shown: [] };
  window.Notification = class {
    static permission = 'default';

    static async requestPermission() {
      window.notificationLog.requests += 1;
      window.Notification.permission = 'granted';
      return 'granted';
    }

    constructor(title, options = {}) {
      this.title = title;
      window.notificationLog.shown.push({ title, body: options.body, notification: this });
    }

    close() {}
  };
  let hidden = false;
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (hidden ? 'hidden' : 'visible') });
  Object.defineProperty(document, 'hidden', { configurable: true, get: () => hidden });
  window.setHidden = (value) => {
    hidden = value;
    document.dispatchEvent(new Event('visibilitychange'));
  };
}

test('messages from others notify while the tab is hidden, once the user has enabled notifications', { timeout: TEST_TIMEOUT_MS }, async () => {
  // Goal: permission is asked for on the user's click only, never on load; a message from someone else that
  // arrives while the page is hidden shows a notification with the sender and text (clicking it opens the chat);
  // none while the page is visible, and none for our own messages.
  await withServer(async ({ open, pages }) => {
    const { alice, bob, aliceName, bobName } = await aliceAndBob(open);
    await bob.context().grantPermissions(['notifications']);
    await bob.addInitScript(fakeNotificationsAndVisibility);
    await bob.reload();
    await waitOnline(bob);
    const shown = () => bob.evaluate(() => window.notificationLog.shown.map(({ title, body }) => ({ title, body })));

    const enable = bob.getByRole('button', { name: 'Enable notifications' });
    await enable.waitFor();
    assert.equal(await bob.evaluate(() => window.notificationLog.requests), 0, 'not asked on load');
    await enable.click();
    await enable.waitFor({ state: 'hidden' });
    assert.equal(await bob.evaluate(() => window.notificationLog.requests), 1, 'asked on the click');

    // Visible: the message shows in the list, and no notification.
    await startChat(alice, bobName);
    await sendText(alice, 'While you look');
    await conversation(bob, aliceName).filter({ hasText: 'While you look' }).waitFor();

    // Hidden: a notification with the sender and the text (and only that one: frames arrive in order).
    await bob.evaluate(() => window.setHidden(true));
    await sendText(alice, 'While you are away');
    await eventually(async () => (await shown()).length > 0, { what: 'a notification' });
    assert.deepEqual(await shown(), [{ title: aliceName, body: 'While you are away' }]);

    // Clicking it opens the chat.
    await bob.evaluate(() => window.notificationLog.shown[0].notification.onclick());
    await bob.getByTestId('chat-title').filter({ hasText: aliceName }).waitFor();
    await messages(bob, 'While you are away').waitFor();

    // Our own message, still hidden: none; Alice's answer after it: one more.
    await sendText(bob, 'Writing back unseen');
    await messages(alice, 'Writing back unseen').waitFor();
    await messages(bob, 'Writing back unseen').and(bob.locator('[data-status="sent"]')).waitFor();
    await sendText(alice, 'Got it');
    await eventually(async () => (await shown()).length > 1, { what: 'a second notification' });
    assert.deepEqual(await shown(), [
      { title: aliceName, body: 'While you are away' },
      { title: aliceName, body: 'Got it' },
    ]);

    // Visible again: nothing more.
    await bob.evaluate(() => window.setHidden(false));
    await sendText(alice, 'Seen as it comes');
    await messages(bob, 'Seen as it comes').waitFor();
    await bob.evaluate(() => window.setHidden(true));
    await sendText(alice, 'Hidden once more');
    await eventually(async () => (await shown()).length > 2, { what: 'a third notification' });
    assert.deepEqual((await shown()).map(({ body }) => body), ['While you are away', 'Got it', 'Hidden once more']);
    assertNoProblems(pages);
  });
});

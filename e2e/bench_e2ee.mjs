// The browser's cost per message to encrypt and decrypt (BENCHMARKS.md, issue 22): the encryption module the
// server serves, run in headless Chromium by a page of that server. Two devices of two users; one seals texts of
// PAYLOAD_BYTES for the other (one Megolm step each), the other opens them; the median of ROUNDS rounds of
// MESSAGES messages, in microseconds per message. A benchmark, not a test: run it by hand, with a server binary
// built after scripts/build_web_e2ee.sh.
//
//   node e2e/bench_e2ee.mjs            (MISSIVE_BIN picks the binary, default target/debug/missive)

import { Server, launchBrowser, openPage } from './helpers.mjs';

const ROUNDS = Number(process.env.ROUNDS ?? 7);
const MESSAGES = Number(process.env.MESSAGES ?? 2000);
const PAYLOAD_BYTES = Number(process.env.PAYLOAD_BYTES ?? 220);

const server = await Server.start();
const browser = await launchBrowser();
try {
  const page = await openPage(browser, server);
  const result = await page.evaluate(async ({ rounds, messages, payloadBytes }) => {
    const module = await import('/e2ee/e2ee.js');
    await module.default();
    const alice = new module.Vault('alice', 1);
    const bob = new module.Vault('bob', 2);
    const bobIdentity = JSON.parse(bob.identity());
    const [bobKey] = JSON.parse(bob.newOneTimeKeys(1));
    alice.startSession(JSON.stringify(bobIdentity), JSON.stringify(bobKey));
    const recipients = JSON.stringify([{ user: 'bob', device_id: 2, ...bobIdentity }]);
    const content = JSON.stringify({ text: 'x'.repeat(payloadBytes) });
    const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
    const sealUs = [];
    const openUs = [];
    const wireBytes = [];
    for (let round = 0; round < rounds; round++) {
      const sealed = [];
      let started = performance.now();
      for (let i = 0; i < messages; i++) sealed.push(JSON.parse(alice.encrypt(7, recipients, content)));
      sealUs.push(((performance.now() - started) * 1000) / messages);
      for (const share of sealed.flatMap((item) => item.shares)) bob.receiveShare('alice', 1, share.body);
      started = performance.now();
      for (const item of sealed) {
        const opened = JSON.parse(bob.decrypt(7, 'alice', 1, item.ciphertext));
        if (opened.plaintext !== content) throw new Error(`decrypt failed: ${JSON.stringify(opened)}`);
      }
      openUs.push(((performance.now() - started) * 1000) / messages);
      wireBytes.push(sealed[0].ciphertext.length);
    }
    return { seal: median(sealUs), open: median(openUs), sealAll: sealUs, openAll: openUs, wireBytes: wireBytes[0] };
  }, { rounds: ROUNDS, messages: MESSAGES, payloadBytes: PAYLOAD_BYTES });
  const fmt = (values) => values.map((value) => value.toFixed(1)).join(' ');
  console.log(`chromium ${browser.version()}: ${MESSAGES} messages x ${ROUNDS} rounds, ${PAYLOAD_BYTES}-byte texts `
    + `(${result.wireBytes}-byte ciphertext)`);
  console.log(`encrypt: median ${result.seal.toFixed(1)} µs/message (rounds: ${fmt(result.sealAll)})`);
  console.log(`decrypt: median ${result.open.toFixed(1)} µs/message (rounds: ${fmt(result.openAll)})`);
} finally {
  await browser.close();
  await server.stop();
}

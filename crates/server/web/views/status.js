// The connection line at the top: shown whenever the page is not connected
// (or still has something waiting to send), so the user knows whether what
// they send goes out now or waits; hidden while all is well.

import { $ } from './dom.js';

export class StatusView {
  constructor({ onRetry }) {
    this.element = $('#connection-status');
    this.text = $('#connection-text');
    this.retry = $('#connection-retry');
    this.countdown = $('#connection-countdown');
    this.retry.addEventListener('click', () => onRetry());
    this.status = { state: 'idle' };
    this.waiting = 0;
    this.ticker = null;
  }

  update(status, waiting = this.waiting) {
    this.status = status;
    this.waiting = waiting;
    this.render();
    clearInterval(this.ticker);
    this.ticker = null;
    if (status.state === 'offline' && status.retryAt) {
      // Count down so a long backoff does not look like a hang.
      this.ticker = setInterval(() => this.render(), 1000);
    }
  }

  setWaiting(waiting) {
    if (waiting !== this.waiting) {
      this.waiting = waiting;
      this.render();
    }
  }

  render() {
    const { state, transport, retryAt } = this.status;
    let text;
    let retryLabel = null;
    let countdown = '';
    switch (state) {
      case 'online':
        text = transport === 'poll' ? 'Connected (long-polling)' : 'Connected';
        break;
      case 'connecting':
        text = transport === 'poll' ? 'Connecting (long-polling)…' : 'Connecting…';
        break;
      case 'offline': {
        const seconds = retryAt ? Math.max(0, Math.ceil((retryAt - Date.now()) / 1000)) : 0;
        text = 'Offline. Reconnecting…';
        // Apart from the announced text: a live region that changes every second would never stop talking.
        if (seconds > 0) countdown = `(in ${seconds} s)`;
        retryLabel = 'Retry now';
        break;
      }
      case 'replaced':
        text = 'This account is open in another tab or window of this browser.';
        retryLabel = 'Use here';
        break;
      case 'stopped':
        text = 'Disconnected';
        break;
      default:
        text = 'Starting…';
    }
    if (this.waiting > 0) text += ` · ${this.waiting} waiting to send`;
    this.element.dataset.state = state;
    this.element.hidden = state === 'online' && this.waiting === 0;
    this.element.dataset.transport = transport ?? '';
    // Rewriting identical text would make screen readers repeat it every second.
    if (this.text.textContent !== text) this.text.textContent = text;
    this.countdown.textContent = countdown;
    this.retry.hidden = retryLabel === null;
    if (retryLabel) this.retry.textContent = retryLabel;
  }
}

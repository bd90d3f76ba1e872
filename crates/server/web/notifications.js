// Desktop notifications for messages that arrive while the tab is hidden.
// The browser is asked for permission only when the user presses "Enable
// notifications": a request on load is ignored or held against the site by
// browsers, and it would ask before the user knows what for.

export class Notifier {
  /**
   * @param {HTMLButtonElement} button the "Enable notifications" button, shown while the browser could still ask
   * @param {object} hooks
   * @param {(message: string) => void} hooks.onRefused said when the browser does not allow them
   */
  constructor(button, { onRefused }) {
    this.button = button;
    this.onRefused = onRefused;
    this.button.addEventListener('click', () => this.enable());
    this.update();
  }

  get supported() {
    return typeof window.Notification === 'function';
  }

  update() {
    this.button.hidden = !this.supported || Notification.permission !== 'default';
  }

  async enable() {
    let permission = 'denied';
    try {
      permission = await Notification.requestPermission();
    } catch {
      // Refused outright (some browsers throw rather than answer): same as "denied".
    }
    this.update();
    if (permission === 'denied') this.onRefused('Notifications are blocked for this site. Allow them in the browser\'s site settings.');
  }

  /**
   * Show a notification if the user is not looking at the page and has allowed them. `tag` groups a chat's
   * notifications, so a burst of messages replaces one notification instead of piling up.
   */
  show({ title, body, tag, onClick }) {
    if (!this.supported || Notification.permission !== 'granted' || document.visibilityState !== 'hidden') return;
    try {
      const notification = new Notification(title, { body, tag });
      notification.onclick = () => {
        window.focus();
        notification.close();
        onClick();
      };
    } catch {
      // Some browsers (Android Chrome) allow notifications only from a service worker: nothing to show then.
    }
  }
}

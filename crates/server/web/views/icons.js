// Small SVG icons drawn in code: they look the same everywhere, unlike
// emoji and symbol glyphs, which depend on the fonts a system has.

import { h } from './dom.js';

const SVG = 'http://www.w3.org/2000/svg';

// Each shape: a viewBox and its elements as [tag, attributes].
const SHAPES = {
  sent: ['0 0 20 14', [['polyline', { points: '3.5,7.5 7,11 14.5,2.5' }]]],
  double: ['0 0 20 14', [['polyline', { points: '1.5,7.5 5,11 12.5,2.5' }], ['polyline', { points: '8.5,10 9.5,11 17,2.5' }]]],
  clock: ['0 0 20 14', [['circle', { cx: '10', cy: '7', r: '5.2' }], ['polyline', { points: '10,4.2 10,7.2 12.2,8.4' }]]],
  alert: ['0 0 20 14', [['circle', { cx: '10', cy: '7', r: '5.6' }], ['line', { x1: '10', y1: '4', x2: '10', y2: '7.8' }], ['line', { x1: '10', y1: '9.6', x2: '10', y2: '10' }]]],
  banned: ['0 0 16 16', [['circle', { cx: '8', cy: '8', r: '6' }], ['line', { x1: '3.8', y1: '12.2', x2: '12.2', y2: '3.8' }]]],
};

export function icon(name, className = 'icon') {
  const [viewBox, parts] = SHAPES[name];
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', viewBox);
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', className);
  for (const [tag, attributes] of parts) {
    const part = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attributes)) part.setAttribute(key, value);
    svg.append(part);
  }
  return svg;
}

const TICK_ICON = { pending: 'clock', sent: 'sent', delivered: 'double', read: 'double', failed: 'alert' };
const TICK_LABEL = { pending: 'Waiting to send', sent: 'Sent', delivered: 'Delivered', read: 'Read', failed: 'Not sent' };

/** ✓ sent, ✓✓ delivered, blue ✓✓ read; a clock while waiting to send. */
export function tickElement(state) {
  const tick = h('span', { class: 'ticks', role: 'img', dataset: { testid: 'ticks' } });
  setTick(tick, state);
  return tick;
}

export function setTick(tick, state) {
  tick.dataset.state = state;
  tick.setAttribute('aria-label', TICK_LABEL[state]);
  tick.title = TICK_LABEL[state];
  tick.replaceChildren(icon(TICK_ICON[state], 'tick-icon'));
}

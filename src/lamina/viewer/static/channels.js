// Z-stacks and fluorescence channels: what the metadata says of them, their default windows, and
// the focus slider and channel panel of a slide with several focal planes or optical paths.
//
// The server windows a channel's 16-bit samples and colours them with the optical path's palette
// (rendered.py); the viewer shows each visible channel as its own tiled image, added on the canvas
// ('lighter' blending): a channel switched off is not requested at all, and a window or plane
// changed asks only the tiles in view again. Every tile of a channel is asked with one window
// (center,width,LINEAR_EXACT of the min/max set here): a window of each tile's own would show seams.

import { h } from './dom.js';
import { value, values } from './dicomweb.js';
import { authFetch } from './signin.js';

const TOTAL_PIXEL_MATRIX_FOCAL_PLANES = '00480303';
const NUMBER_OF_OPTICAL_PATHS = '00480302';
const OPTICAL_PATH_IDENTIFIER = '00480106';
const OPTICAL_PATH_DESCRIPTION = '00480107';
const SPACING_BETWEEN_SLICES = '00180088';
const PALETTE_DATA = ['00281201', '00281202', '00281203'];  // Red, Green, Blue

// The last entry of a channel's palette (black to its colour) as #rrggbb; white without one.
function paletteColour(path) {
  const bytes = PALETTE_DATA.map((tag) => {
    const text = path && path[tag] && path[tag].InlineBinary;
    if (!text) return null;
    const raw = atob(text);
    return raw.length >= 2 ? raw.charCodeAt(raw.length - 1) : null;  // high byte of the last 16-bit entry
  });
  if (bytes.some((byte) => byte === null)) return '#ffffff';
  return `#${bytes.map((byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

// Tiles of one level (one focal plane of one optical path).
export function tilesOf(image) {
  return Math.ceil(image.width / image.tileWidth) * Math.ceil(image.height / image.tileHeight);
}

// The stack of a slide from its series metadata: null for one plane of one path (brightfield);
// else its planes, the plane shown, micrometres between planes, and its channels.
export function readStack(metadata, levels) {
  if (!levels.length) return null;
  const base = metadata.find((item) => value(item, 'SOPInstanceUID') === levels[0].sop) || {};
  const planes = Number(value(base, TOTAL_PIXEL_MATRIX_FOCAL_PLANES, 1)) || 1;
  const paths = Number(value(base, NUMBER_OF_OPTICAL_PATHS, 1)) || 1;
  if (planes <= 1 && paths <= 1) return null;
  const shared = values(base, 'SharedFunctionalGroupsSequence')[0];
  const spacing = Number(value(values(shared, 'PixelMeasuresSequence')[0], SPACING_BETWEEN_SLICES, 0));
  const items = values(base, 'OpticalPathSequence');
  const channels = [];
  for (let index = 0; index < paths; index += 1) {
    const item = items[index] || {};
    channels.push({
      index,
      name: value(item, OPTICAL_PATH_DESCRIPTION) || `Channel ${value(item, OPTICAL_PATH_IDENTIFIER, index + 1)}`,
      colour: paletteColour(item),
      on: true,
      low: null,  // the window's bounds in stored sample values; null: the server's default
      high: null,
    });
  }
  return { planes, paths, plane: Math.floor(planes / 2), spacingUm: spacing * 1000, channels };
}

// The frame number of tile (x, y) of `image` at `plane` of optical path `path` (TILED_FULL:
// optical path outermost, then focal plane, then rows, then columns); plane and path 0 for an
// instance whose frames are not the full stack.
export function frameNumber(image, stack, x, y, plane, path) {
  const across = Math.ceil(image.width / image.tileWidth);
  const tiles = tilesOf(image);
  const full = stack && image.frames >= tiles * stack.planes * stack.paths;
  const offset = full ? (plane + path * stack.planes) * tiles : 0;
  return 1 + offset + y * across + x;
}

// The `window` query parameter of a channel's tiles ('' for the server's default).
export function windowQuery(channel) {
  if (channel.low === null || channel.high === null || !(channel.high > channel.low)) return '';
  const center = (channel.low + channel.high) / 2;
  return `?window=${center},${channel.high - channel.low},linear-exact`;
}

// Each channel's default window, as the server windows its middle plane on the smallest level
// (one small frame each, its Lamina-Window header read): then every tile is asked with it.
export async function resolveWindows(stack, levels, signal) {
  const smallest = levels[levels.length - 1];
  await Promise.all(stack.channels.map(async (channel) => {
    const frame = frameNumber(smallest, stack, 0, 0, stack.plane, channel.index);
    try {
      const response = await authFetch(`${smallest.url}/frames/${frame}/rendered?viewport=16,16`, { signal });
      const header = response.ok ? response.headers.get('Lamina-Window') : null;
      if (!header) return;
      const [center, width] = header.split(',').map(Number);
      channel.low = Math.floor(center - width / 2);
      channel.high = Math.max(channel.low + 1, Math.ceil(center + width / 2));
    } catch (error) {
      if (error.name === 'AbortError' || error.name === 'SignInRequired') throw error;
    }
  }));
}

function planeText(stack) {
  const offset = stack.spacingUm ? ` (${((stack.plane - Math.floor(stack.planes / 2)) * stack.spacingUm).toFixed(1)} µm)` : '';
  return `Plane ${stack.plane + 1} of ${stack.planes}${offset}`;
}

// The focus slider and channel panel; `apply()` shows the stack as it now is (viewer.showStack).
export function stackPanel(stack, apply) {
  let timer = null;
  const soon = () => {
    clearTimeout(timer);
    timer = setTimeout(apply, 120);
  };
  const parts = [];
  if (stack.planes > 1) {
    const label = h('span', { class: 'focus-text' }, planeText(stack));
    const slider = h('input', {
      type: 'range', id: 'focus', min: '0', max: String(stack.planes - 1), step: '1',
      value: String(stack.plane), 'aria-label': 'Focal plane',
    });
    slider.addEventListener('input', () => {
      stack.plane = Number(slider.value);
      label.textContent = planeText(stack);
      soon();
    });
    parts.push(h('h3', {}, 'Focus'), h('div', { class: 'focus' }, slider, label));
  }
  if (stack.paths > 1) {
    parts.push(h('h3', {}, 'Channels'), h('ul', { class: 'channels' }, stack.channels.map((channel) => {
      const number = (field) => {
        const input = h('input', {
          type: 'number', min: '0', step: '1', class: `channel-${field}`,
          value: channel[field] === null ? '' : String(channel[field]), 'aria-label': `${channel.name} ${field === 'low' ? 'minimum' : 'maximum'}`,
        });
        input.addEventListener('change', () => {
          const read = input.value === '' ? null : Number(input.value);
          channel[field] = Number.isFinite(read) ? read : null;
          soon();
        });
        return input;
      };
      const toggle = h('input', { type: 'checkbox', checked: channel.on, class: 'channel-on', 'aria-label': `Show ${channel.name}` });
      toggle.addEventListener('change', () => {
        channel.on = toggle.checked;
        apply();
      });
      return h('li', { class: 'channel', dataset: { channel: String(channel.index) } },
        h('label', { class: 'channel-name' }, toggle,
          h('span', { class: 'swatch', style: `background:${channel.colour}` }), channel.name),
        h('div', { class: 'channel-window' }, 'Window ', number('low'), ' – ', number('high')));
    })));
  }
  return h('section', { class: 'stack-panel' }, parts);
}

// The terminal's look, shared by the SSH terminal (ssh.js) and the
// recording player (player.js): dark in both page schemes, in the
// console's own colours. Its background is also --term-bg in app.css.

export const FONT_FAMILY =
  '"DejaVu Sans Mono", ui-monospace, Menlo, Consolas, "Liberation Mono", monospace';
export const FONT_SIZE = 14;     // px (the player then fits it to the window)
export const LINE_HEIGHT = 1.1;

export const THEME = {
  background: '#12151b',
  foreground: '#e6e9ef',
  cursor: '#a3c3e6',
  cursorAccent: '#12151b',
  selectionBackground: 'rgba(127, 169, 214, 0.4)',
  black: '#1b2029',
  red: '#e5706a',
  green: '#5fcf86',
  yellow: '#e6b450',
  blue: '#6f9fd8',
  magenta: '#c38fd9',
  cyan: '#5cbfc9',
  white: '#d5dae3',
  brightBlack: '#6b7587',
  brightRed: '#f49a94',
  brightGreen: '#8be0a8',
  brightYellow: '#f2cd7d',
  brightBlue: '#9dc0ea',
  brightMagenta: '#d9b3ea',
  brightCyan: '#8ad8df',
  brightWhite: '#ffffff',
};

// Postern console. Loaded from /app.js because the CSP (script-src 'self')
// forbids inline scripts.
'use strict';

(function () {
  // Poll often enough that a draining gateway shows up before its grace
  // period ends, rarely enough to stay out of the request metrics' way.
  const HEALTH_INTERVAL_MS = 15000;
  const HEALTH_TIMEOUT_MS = 5000;

  const out = document.getElementById('health');
  if (!out) {
    return;
  }

  function show(text, state) {
    out.textContent = text;
    out.className = 'state state-' + state;
  }

  async function check() {
    const ctl = new AbortController();
    const timer = setTimeout(function () { ctl.abort(); }, HEALTH_TIMEOUT_MS);
    try {
      const res = await fetch('/healthz', {
        cache: 'no-store',
        credentials: 'same-origin',
        signal: ctl.signal,
      });
      const body = (await res.text()).trim();
      if (res.ok && body === 'ok') {
        show('ok \u2014 serving', 'ok');
      } else if (res.status === 503) {
        show('draining \u2014 not taking new sessions', 'draining');
      } else {
        show('unexpected answer (HTTP ' + res.status + ')', 'error');
      }
    } catch (err) {
      show('unreachable', 'error');
    } finally {
      clearTimeout(timer);
    }
  }

  check();
  setInterval(check, HEALTH_INTERVAL_MS);
})();

// Notifications in confab's web client: the page's visibility told to the
// server (a hidden page lets pushes through), turning Web Push on for this
// browser, do-not-disturb, and each conversation's notification settings.
// Uses only the public protocol, through what app.js exposes as
// window.confab.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const C = () => window.confab;
  const SUB_KEY = 'confab.push.endpoint';

  // ------------------------------------------------------------ activity

  // A connection counts as active until it says its page is hidden; the
  // server pushes only to users with no active connection.
  function reportVisibility() {
    if (!C()) return;
    C().send({ type: 'presence_state', data: { active: document.visibilityState === 'visible' } });
  }
  document.addEventListener('visibilitychange', reportVisibility);
  document.addEventListener('confab:connected', () => {
    reportVisibility();
    openRoomFromHash();
    refreshState();
  });

  // ------------------------------------------------- opening from a click

  function openRoomFromHash() {
    const m = /^#room=([0-9A-Za-z]+)$/.exec(location.hash);
    if (!m || !C()) return;
    C().openRoom(m[1]);
    history.replaceState(null, '', location.pathname + location.search);
  }
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.addEventListener('message', (e) => {
      if (e.data && e.data.type === 'open_room' && typeof e.data.room === 'string' && C()) {
        C().openRoom(e.data.room);
      }
    });
  }

  // ------------------------------------------------------- turning it on

  const supported = () => 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window;

  function b64ToBytes(s) {
    const pad = '='.repeat((4 - (s.length % 4)) % 4);
    const raw = atob((s + pad).replace(/-/g, '+').replace(/_/g, '/'));
    return Uint8Array.from(raw, (c) => c.charCodeAt(0));
  }

  async function registration() {
    return navigator.serviceWorker.register('/sw.js', { scope: '/' });
  }

  async function currentSubscription() {
    if (!supported()) return null;
    const reg = await navigator.serviceWorker.getRegistration('/');
    return reg ? reg.pushManager.getSubscription() : null;
  }

  async function refreshState() {
    const state = $('notify-state');
    const toggle = $('notify-toggle');
    if (!state || !toggle) return;
    if (!supported()) {
      state.textContent = 'This browser cannot show notifications.';
      toggle.hidden = true;
      return;
    }
    let on = false;
    try { on = !!(await currentSubscription()); } catch { on = false; }
    if (Notification.permission === 'denied') {
      state.textContent = 'Notifications are blocked for this site in the browser’s settings.';
      toggle.hidden = true;
      return;
    }
    toggle.hidden = false;
    state.textContent = on
      ? 'Notifications are on on this browser.'
      : 'Notifications are off on this browser.';
    toggle.textContent = on ? 'Turn off notifications' : 'Turn on notifications';
    toggle.dataset.on = on ? '1' : '';
  }

  async function turnOn() {
    // Permission is asked only now, after the person chose to turn
    // notifications on.
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') throw new Error('Notifications were not allowed.');
    const reg = await registration();
    await navigator.serviceWorker.ready;
    const { public_key: key } = await C().api('GET', '/api/push/vapid');
    let sub = await reg.pushManager.getSubscription();
    if (!sub) {
      try {
        sub = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64ToBytes(key) });
      } catch (e) {
        throw new Error(`This browser could not subscribe to push messages (${e.message || e.name}).`);
      }
    }
    await C().api('POST', '/api/push/subscriptions', sub.toJSON());
    localStorage.setItem(SUB_KEY, sub.endpoint);
  }

  async function turnOff() {
    const sub = await currentSubscription();
    if (!sub) return;
    await C().api('DELETE', '/api/push/subscriptions', { endpoint: sub.endpoint }).catch(() => {});
    await sub.unsubscribe();
    localStorage.removeItem(SUB_KEY);
  }

  // ------------------------------------------------------ do not disturb

  const toMinutes = (v) => {
    const [h, m] = String(v).split(':').map(Number);
    return (h * 60 + m) % 1440;
  };
  const toTime = (n) => `${String(Math.floor(n / 60)).padStart(2, '0')}:${String(n % 60).padStart(2, '0')}`;

  async function loadDnd() {
    try {
      const s = await C().api('GET', '/api/me/notifications');
      $('dnd-on').checked = !!s.dnd;
      if (s.dnd) {
        $('dnd-start').value = toTime(s.dnd.start_min);
        $('dnd-end').value = toTime(s.dnd.end_min);
      }
    } catch { /* shown as it was */ }
  }

  async function saveDnd(ev) {
    ev.preventDefault();
    const status = $('dnd-status');
    const dnd = $('dnd-on').checked
      ? {
        start_min: toMinutes($('dnd-start').value),
        end_min: toMinutes($('dnd-end').value),
        // The browser's own offset, east of UTC in minutes.
        utc_offset_min: -new Date().getTimezoneOffset(),
      }
      : null;
    try {
      await C().api('PUT', '/api/me/notifications', { dnd });
      status.textContent = dnd ? `Quiet from ${toTime(dnd.start_min)} to ${toTime(dnd.end_min)}.` : 'Do not disturb is off.';
    } catch (e) {
      status.textContent = `Not saved: ${e.message || e.code}.`;
    }
  }

  // ------------------------------------------------ a room's settings

  let roomInDialog = null;

  async function openRoomDialog() {
    const room = C() && C().currentRoom();
    if (!room) return;
    roomInDialog = room.id;
    $('room-notify-title').textContent = `Notifications: ${C().roomName(room)}`;
    $('room-notify-error').textContent = '';
    try {
      const s = await C().api('GET', `/api/rooms/${room.id}/notifications`);
      for (const r of document.querySelectorAll('#room-notify-form input[name="level"]')) {
        r.checked = r.value === s.level;
      }
      $('room-mute').checked = !!s.muted;
    } catch (e) {
      $('room-notify-error').textContent = e.message || e.code;
    }
    $('room-notify-dialog').showModal();
  }

  async function saveRoom(ev) {
    ev.preventDefault();
    const level = document.querySelector('#room-notify-form input[name="level"]:checked');
    try {
      const saved = await C().api('PUT', `/api/rooms/${roomInDialog}/notifications`, {
        level: level ? level.value : null,
        muted: $('room-mute').checked,
      });
      C().setRoomNotify(saved);
      $('room-notify-dialog').close();
    } catch (e) {
      $('room-notify-error').textContent = `Not saved: ${e.message || e.code}.`;
    }
  }

  // ---------------------------------------------------------------- wiring

  function wire() {
    $('notify-toggle').addEventListener('click', async () => {
      const toggle = $('notify-toggle');
      $('notify-error').textContent = '';
      toggle.disabled = true;
      try {
        if (toggle.dataset.on) await turnOff();
        else await turnOn();
      } catch (e) {
        $('notify-error').textContent = e.message || String(e.code || e);
      } finally {
        toggle.disabled = false;
        refreshState();
      }
    });
    $('dnd-form').addEventListener('submit', saveDnd);
    $('room-notify').addEventListener('click', openRoomDialog);
    $('room-notify-form').addEventListener('submit', saveRoom);
    $('me-name').addEventListener('click', () => {
      refreshState();
      loadDnd();
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', wire);
  else wire();
})();

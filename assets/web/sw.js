// confab's service worker: shows the push notifications the server sends
// (docs/protocol.md, "Push notifications") and opens the room when one is
// clicked. Served at /sw.js so its scope is the whole site.
'use strict';

self.addEventListener('install', () => self.skipWaiting());
self.addEventListener('activate', (e) => e.waitUntil(self.clients.claim()));

// The payload is JSON when the server sends content; with
// push.content = "none" a push carries nothing and says only that
// something happened.
function describe(d) {
  if (!d || !d.room) {
    return { title: 'confab', body: 'You have new messages.', tag: 'confab', data: {} };
  }
  const dm = d.room.kind === 'dm';
  const title = dm ? `@${d.room.name}` : `#${d.room.name}`;
  const who = d.sender && d.sender.username ? `${d.sender.username}: ` : '';
  const more = d.count > 1 ? `${d.count} new messages · ` : '';
  return {
    title,
    body: `${more}${who}${d.preview || ''}`,
    tag: `room-${d.room.id}`,
    data: { room: d.room.id },
  };
}

self.addEventListener('push', (e) => {
  let d = null;
  try {
    d = e.data ? e.data.json() : null;
  } catch {
    d = null;
  }
  const n = describe(d);
  e.waitUntil(self.registration.showNotification(n.title, {
    body: n.body,
    tag: n.tag,
    data: n.data,
    icon: '/assets/icon.svg',
    renotify: true,
  }));
});

self.addEventListener('notificationclick', (e) => {
  e.notification.close();
  const room = e.notification.data && e.notification.data.room;
  const url = new URL(room ? `/#room=${encodeURIComponent(room)}` : '/', self.location.origin).href;
  e.waitUntil((async () => {
    const open = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });
    for (const c of open) {
      if (new URL(c.url).origin !== self.location.origin) continue;
      await c.focus();
      c.postMessage({ type: 'open_room', room });
      return;
    }
    await self.clients.openWindow(url);
  })());
});

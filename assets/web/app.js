// confab's built-in web client. Plain JavaScript, no build step, no
// dependencies: it is embedded in the server binary and speaks only the
// public protocol (docs/protocol.md), like any other client.
//
// Every piece of text that comes from the server or a user reaches the page
// through textContent or a text node, never through innerHTML; the page's
// Content-Security-Policy forbids inline scripts as a second line.
'use strict';

(() => {
  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);

  // Builds an element. Strings among the children become text nodes, so
  // user data can never become markup.
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid != null && kid !== false) e.append(kid);
    }
    return e;
  }

  const storage = {
    get(key) {
      try { return localStorage.getItem(key); } catch { return null; }
    },
    set(key, value) {
      try {
        if (value == null) localStorage.removeItem(key);
        else localStorage.setItem(key, value);
      } catch { /* storage may be full or disabled: the session still works */ }
    },
    json(key, fallback) {
      try { return JSON.parse(this.get(key)) ?? fallback; } catch { return fallback; }
    },
  };

  // crypto.randomUUID needs a secure context; a server reached over plain
  // HTTP on a LAN address is not one, getRandomValues works everywhere.
  function randomId() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  }

  // Only http(s) URLs are ever put in an href or src; relative ones resolve
  // against this server.
  function safeUrl(u) {
    if (typeof u !== 'string') return null;
    try {
      const url = new URL(u, location.href);
      return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : null;
    } catch {
      return null;
    }
  }

  const timeFmt = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit' });
  const dayFmt = new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' });
  const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: 'full', timeStyle: 'medium' });

  function when(ms) {
    const d = new Date(ms);
    const today = new Date();
    const sameDay = d.toDateString() === today.toDateString();
    return sameDay ? timeFmt.format(d) : `${dayFmt.format(d)}, ${timeFmt.format(d)}`;
  }

  const USERNAME = /^[a-z0-9_.-]{3,32}$/;
  const ROOM_NAME = /^[a-z0-9_-]{1,64}$/;
  const URL_IN_TEXT = /\bhttps?:\/\/[^\s<>"']+/g;

  // Text with its http(s) links made clickable, as nodes.
  function richText(text) {
    const out = [];
    let last = 0;
    for (const m of text.matchAll(URL_IN_TEXT)) {
      let url = m[0];
      // Punctuation right after a link is usually the sentence's, not the link's.
      const trail = url.match(/[.,;:!?)\]]+$/);
      if (trail) url = url.slice(0, -trail[0].length);
      const href = safeUrl(url);
      if (!href) continue;
      out.push(text.slice(last, m.index));
      out.push(h('a', { href, target: '_blank', rel: 'noopener noreferrer' }, url));
      last = m.index + url.length;
    }
    out.push(text.slice(last));
    return out;
  }

  function toast(text, kind) {
    const t = h('div', { class: `toast ${kind || ''}` }, text);
    $('toasts').append(t);
    setTimeout(() => t.remove(), 6000);
  }

  // ------------------------------------------------------------------ state

  const TOKEN_KEY = 'confab.token';
  const USER_KEY = 'confab.user';
  const PAGE = 50;
  const RECONNECT_STEPS = [300, 1000, 2000, 3000, 5000];
  const TYPING_EVERY_MS = 3000;
  const TYPING_IDLE_MS = 4000;
  const REQUEST_TIMEOUT_MS = 15000;
  const PING_EVERY_MS = 25000;

  const S = {
    token: null,
    // Rooms whose notification setting is muted or "nothing": their unread
    // count shows quietly and stays out of the title's.
    quiet: new Set(),
    me: null,
    ws: null,
    conn: 'offline',
    everConnected: false,
    attempt: 0,
    reconnectTimer: 0,
    pingTimer: 0,
    signingOut: false,
    kicked: null,
    ban: null, // the ban that ended this session: {until, reason}
    mutes: [], // the user's own mutes in force: [{room, until, reason}]
    muteTimer: 0,
    profile: null, // the profile dialog's {user, room}
    roomDialog: null, // the room whose settings are open
    roomMembers: [],
    rooms: new Map(),
    current: null, // a room id, or "dm:<username>" for a conversation not started yet
    online: new Map(),
    presence: [],
    joining: new Set(),
    pending: new Map(),
    nextId: 1,
    outbox: [],
    tray: [],
    editing: null,
    rovingId: null, // the message that is the timeline's one Tab stop
    typingRoom: null,
    typingSentAt: 0,
    typingIdleTimer: 0,
    reads: {},
    readsTimer: 0,
    unread: new Map(), // room id -> the server's Unread (docs/protocol.md §12)
    members: new Map(), // room id -> [User], for @-autocomplete
    divider: null, // {room, after}: the "new messages" line of the room opened
    mention: null, // the @-autocomplete: {start, options, active}
    markTimer: 0,
    presenceTimer: 0,
  };

  function newRoomState(room, readSeq) {
    return {
      room,
      msgs: [], // ascending seq
      lastSeq: 0,
      hasMoreBefore: true,
      loaded: false,
      loading: false,
      loadingOlder: false,
      // null: this device has no marker for the room yet (see loadLatest)
      readSeq,
      readers: new Map(),
      typing: new Map(),
      notes: [], // announcements for this room, shown after the seq they came at
    };
  }

  const isDraft = (key) => typeof key === 'string' && key.startsWith('dm:');
  const currentRoom = () => (isDraft(S.current) ? null : S.rooms.get(S.current) || null);

  function dmPeer(room) {
    const names = room.name.split(',');
    return names.find((n) => n !== S.me.username) || S.me.username;
  }

  function roomLabel(room) {
    if (room.kind === 'dm') {
      const peer = dmPeer(room);
      return peer === S.me.username ? `${peer} (you)` : peer;
    }
    return room.name;
  }

  function findDm(username) {
    const name = [S.me.username, username].sort().join(',');
    for (const r of S.rooms.values()) {
      if (r.room.kind === 'dm' && r.room.name === name) return r;
    }
    return null;
  }

  // ----------------------------------------------------- read markers, unread

  // The server keeps read markers but only announces their changes (the
  // `read` event), so each device remembers the markers it has seen.
  const readsKey = () => `confab.read.${S.me.id}`;

  function setReadSeq(rs, seq) {
    if (rs.readSeq != null && seq <= rs.readSeq) return false;
    rs.readSeq = seq;
    S.reads[rs.room.id] = seq;
    clearTimeout(S.readsTimer);
    S.readsTimer = setTimeout(() => storage.set(readsKey(), JSON.stringify(S.reads)), 300);
    return true;
  }

  function unread(rs) {
    const server = S.unread.get(rs.room.id);
    if (server) return server.unread;
    if (rs.readSeq == null || rs.lastSeq <= rs.readSeq) return 0;
    let n = rs.lastSeq - rs.readSeq;
    for (let i = rs.msgs.length - 1; i >= 0 && rs.msgs[i].seq > rs.readSeq; i--) {
      if (rs.msgs[i].sender.id === S.me.id) n--;
    }
    return Math.max(0, n);
  }

  function maybeMarkRead() {
    clearTimeout(S.markTimer);
    S.markTimer = setTimeout(() => {
      const rs = currentRoom();
      if (!rs || !rs.loaded || S.conn !== 'connected') return;
      if (document.visibilityState !== 'visible' || !atBottom()) return;
      if (rs.readSeq != null && rs.lastSeq <= rs.readSeq) return;
      const seq = rs.lastSeq;
      if (seq === 0) return;
      setReadSeq(rs, seq);
      readLocally(rs.room.id, seq);
      renderSidebar();
      request('mark_read', { room: rs.room.id, seq }).catch(() => {});
    }, 150);
  }

  // ------------------------------------------ mentions and unread counts

  // The server counts unread messages and mentions per room; between its
  // snapshots (`authenticated`, `unread`) this client counts new messages
  // itself, by the rule of docs/protocol.md §12.
  function setUnreadAll(list) {
    S.unread.clear();
    for (const u of Array.isArray(list) ? list : []) {
      if (u && typeof u.room === 'string') S.unread.set(u.room, u);
    }
    for (const [id, u] of S.unread) {
      const rs = S.rooms.get(id);
      if (rs && typeof u.last_read_seq === 'number') setReadSeq(rs, u.last_read_seq);
    }
  }

  function onUnread(d) {
    if (typeof d.room !== 'string') return;
    S.unread.set(d.room, d);
    const rs = S.rooms.get(d.room);
    if (rs && typeof d.last_read_seq === 'number') setReadSeq(rs, d.last_read_seq);
    renderSidebar();
  }

  function countLive(m) {
    const u = S.unread.get(m.room);
    if (!u || typeof m.seq !== 'number' || m.seq <= u.last_seq) return;
    u.last_seq = m.seq;
    if (m.sender && m.sender.id !== S.me.id && m.seq > u.last_read_seq) {
      u.unread += 1;
      if (Array.isArray(m.mentions) && m.mentions.includes(S.me.id)) u.mentions += 1;
    }
  }

  // Reading here clears the counts at once; the server's `unread` event
  // confirms it (and clears this user's other devices).
  function readLocally(roomId, seq) {
    const u = S.unread.get(roomId);
    if (!u || seq <= u.last_read_seq) return;
    u.last_read_seq = seq;
    if (seq >= u.last_seq) {
      u.unread = 0;
      u.mentions = 0;
    }
  }

  const mentionsIn = (rs) => S.unread.get(rs.room.id)?.mentions || 0;

  function totalMentions() {
    let n = 0;
    for (const rs of S.rooms.values()) n += mentionsIn(rs);
    return n;
  }

  function mentionBadge(rs) {
    const n = mentionsIn(rs);
    if (!n) return null;
    const label = `${n} mention${n === 1 ? '' : 's'}`;
    return h('span', { class: 'badge mention-badge', 'aria-label': label, title: label }, `@${n > 99 ? '99+' : n}`);
  }

  // The tab's icon carries the count too: a badge drawn as SVG, for
  // browsers whose tab shows no title.
  let plainIcon = null;
  function showCountInIcon(total, mentions) {
    const link = document.querySelector('link[rel="icon"]');
    if (!link) return;
    if (plainIcon === null) plainIcon = link.getAttribute('href');
    const want = total ? String(total > 99 ? '99+' : total) : '';
    if (link.dataset.count === want) return;
    link.dataset.count = want;
    if (!want) {
      link.setAttribute('href', plainIcon);
      link.setAttribute('type', 'image/svg+xml');
      return;
    }
    const fill = mentions ? '#c92a2a' : '#3b5bdb';
    const size = want.length > 2 ? 26 : 34;
    const svg = '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64">'
      + `<circle cx="32" cy="32" r="31" fill="${fill}"/>`
      + `<text x="32" y="${32 + size * 0.36}" font-family="sans-serif" font-size="${size}" font-weight="700" fill="#fff" text-anchor="middle">${want}</text></svg>`;
    link.setAttribute('href', `data:image/svg+xml,${encodeURIComponent(svg)}`);
  }

  // The "new messages" line: where the first unread message was when the
  // room was opened. It stays there while the room is open.
  function placeDivider(rs) {
    if (!rs) { S.divider = null; return; }
    const u = S.unread.get(rs.room.id);
    const unreadNow = u ? u.unread : unread(rs);
    const after = u ? u.last_read_seq : rs.readSeq;
    S.divider = unreadNow > 0 && typeof after === 'number' ? { room: rs.room.id, after } : null;
  }

  function firstUnread(rs) {
    if (!S.divider || S.divider.room !== rs.room.id) return null;
    return rs.msgs.find((m) => m.seq > S.divider.after && m.sender && m.sender.id !== S.me.id) || null;
  }

  function renderDivider() {
    // A list item like the messages around it (a list holds only those),
    // read out as its words.
    return h('li', { class: 'divider' }, h('span', null, 'New messages'));
  }

  // `@name` tokens in a message's text, by the server's rule: after the
  // start or a character that is not a letter, digit, `_ . - @`.
  const MENTION_IN_TEXT = /(^|[^\p{L}\p{N}_.\-@])@([A-Za-z0-9_.\-]+)(?![@\p{L}\p{N}])/gu;

  function withMentions(parts, forMe) {
    const me = S.me.username;
    const out = [];
    for (const part of parts) {
      if (typeof part !== 'string') { out.push(part); continue; }
      let last = 0;
      for (const m of part.matchAll(MENTION_IN_TEXT)) {
        const at = m.index + m[1].length;
        const name = m[2].replace(/[.-]+$/, '');
        const token = `@${name}`;
        if (name.length < 3) continue;
        const lower = name.toLowerCase();
        const mine = lower === me || (forMe && (lower === 'room' || lower === 'here'));
        out.push(part.slice(last, at));
        out.push(h('span', { class: `mention${mine ? ' me' : ''}` }, token));
        last = at + token.length;
      }
      out.push(part.slice(last));
    }
    return out;
  }

  // @-autocomplete of the room's members in the composer: arrows move,
  // Enter or Tab take the name, Escape closes.
  async function membersOf(roomId) {
    if (S.members.has(roomId)) return S.members.get(roomId);
    const r = await api('GET', `/api/rooms/${encodeURIComponent(roomId)}`);
    const list = Array.isArray(r?.members) ? r.members : [];
    S.members.set(roomId, list);
    return list;
  }

  function mentionQuery(input) {
    const upto = input.value.slice(0, input.selectionStart);
    const m = upto.match(/(^|[^\p{L}\p{N}_.\-@])@([A-Za-z0-9_.\-]{0,32})$/u);
    return m ? { start: upto.length - m[2].length - 1, prefix: m[2].toLowerCase() } : null;
  }

  async function updateMentions(input) {
    const rs = currentRoom();
    const q = rs && input.selectionStart === input.selectionEnd ? mentionQuery(input) : null;
    if (!q) { closeMentions(); return; }
    let members;
    try { members = await membersOf(rs.room.id); } catch { closeMentions(); return; }
    // The text may have moved on while the members were fetched.
    const now = mentionQuery(input);
    if (!now || now.start !== q.start || currentRoom() !== rs) return;
    const staff = S.me.role === 'moderator' || S.me.role === 'admin';
    const names = members.map((u) => u.username).filter((n) => n !== S.me.username).sort();
    if (rs.room.kind === 'room') {
      names.push('here');
      if (staff || rs.room.owner === S.me.id) names.push('room');
    }
    const options = names.filter((n) => n.startsWith(now.prefix)).slice(0, 8);
    if (options.length === 0) { closeMentions(); return; }
    const keep = S.mention && options.includes(S.mention.options[S.mention.active]);
    const active = keep ? options.indexOf(S.mention.options[S.mention.active]) : 0;
    S.mention = { start: now.start, options, active };
    renderMentions();
  }

  function renderMentions() {
    const list = $('mention-list');
    const input = $('input');
    if (!S.mention) {
      list.hidden = true;
      list.replaceChildren();
      input.removeAttribute('aria-activedescendant');
      return;
    }
    const { options, active } = S.mention;
    list.replaceChildren(...options.map((name, i) => h('li', {
      id: `mention-opt-${i}`,
      role: 'option',
      class: i === active ? 'active' : '',
      'aria-selected': i === active ? 'true' : 'false',
      onmousedown: (ev) => { ev.preventDefault(); S.mention.active = i; takeMention(); },
    }, `@${name}`, name === 'here' || name === 'room'
      ? h('span', { class: 'muted small' }, name === 'here' ? ' members online now' : ' every member')
      : null)));
    list.hidden = false;
    input.setAttribute('aria-activedescendant', `mention-opt-${active}`);
  }

  function closeMentions() {
    if (!S.mention) return;
    S.mention = null;
    renderMentions();
  }

  function takeMention() {
    const input = $('input');
    const { start, options, active } = S.mention;
    const before = input.value.slice(0, start);
    const after = input.value.slice(input.selectionStart).replace(/^[A-Za-z0-9_.-]*/, '');
    const insert = `@${options[active]} `;
    input.value = before + insert + after;
    const caret = before.length + insert.length;
    input.setSelectionRange(caret, caret);
    closeMentions();
    autosize();
  }

  function wireMentions(input) {
    const list = h('ul', { id: 'mention-list', class: 'mention-list', role: 'listbox', 'aria-label': 'People to mention', hidden: true });
    $('composer').prepend(list);
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', 'mention-list');
    input.addEventListener('input', () => { updateMentions(input); });
    input.addEventListener('click', () => { updateMentions(input); });
    input.addEventListener('blur', closeMentions);
    // Before the composer's own keys (Enter sends): on the form, capturing.
    $('composer').addEventListener('keydown', (ev) => {
      if (!S.mention || ev.target !== input || ev.isComposing) return;
      const n = S.mention.options.length;
      if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
        S.mention.active = (S.mention.active + (ev.key === 'ArrowDown' ? 1 : n - 1)) % n;
        renderMentions();
      } else if ((ev.key === 'Enter' && !ev.shiftKey) || ev.key === 'Tab') {
        takeMention();
      } else if (ev.key === 'Escape') {
        closeMentions();
      } else {
        return;
      }
      ev.preventDefault();
      ev.stopPropagation();
    }, true);
  }

  // ---------------------------------------------------------- the socket

  function wsUrl() {
    return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;
  }

  function setConn(state) {
    S.conn = state;
    const el = $('conn');
    el.dataset.state = state;
    el.textContent = {
      connected: 'connected',
      connecting: 'connecting…',
      reconnecting: 'reconnecting…',
      offline: 'offline',
    }[state];
    $('input').placeholder = state === 'connected'
      ? 'Message'
      : 'Message (sent when the connection is back)';
  }

  function connect() {
    clearTimeout(S.reconnectTimer);
    if (S.ws || !S.token) return;
    setConn(S.everConnected ? 'reconnecting' : 'connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch {
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    S.wsToken = S.token;
    // The token goes in the first frame rather than the URL, so it never
    // shows up in access logs or proxies.
    ws.onopen = () => ws.send(JSON.stringify({ type: 'auth', data: { token: S.token } }));
    ws.onmessage = (ev) => {
      let f;
      try { f = JSON.parse(ev.data); } catch { return; }
      if (f && typeof f === 'object' && typeof f.type === 'string') {
        try { handleFrame(f); } catch (e) { console.error('confab: frame', f.type, e); }
      }
    };
    ws.onclose = (ev) => onClose(ws, ev);
  }

  function scheduleReconnect() {
    clearTimeout(S.reconnectTimer);
    const base = RECONNECT_STEPS[Math.min(S.attempt, RECONNECT_STEPS.length - 1)];
    S.attempt++;
    // Jitter keeps a crowd of clients from coming back in lockstep after a restart.
    const delay = base * (0.8 + Math.random() * 0.4);
    setConn(S.everConnected ? 'reconnecting' : 'connecting');
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function onClose(ws, ev) {
    if (ws !== S.ws) return;
    S.ws = null;
    const tokenReplaced = S.wsToken !== S.token;
    clearInterval(S.pingTimer);
    for (const [, p] of S.pending) {
      clearTimeout(p.timer);
      p.reject({ code: 'disconnected', message: 'the connection was lost' });
    }
    S.pending.clear();
    S.typingRoom = null;
    for (const rs of S.rooms.values()) {
      for (const t of rs.typing.values()) clearTimeout(t.timer);
      rs.typing.clear();
    }
    renderTyping();
    for (const e of S.outbox) if (e.state === 'sending') e.state = 'queued';
    renderPending();
    if (S.signingOut) return;
    if (ev.code === 4001 && S.changingPassword) {
      // The change ends this token too; the new one connects when the
      // answer arrives.
      return;
    }
    if (ev.code === 4001 && tokenReplaced) {
      // The answer came first: the connection ended with the old token.
      S.attempt = 0;
      connect();
      return;
    }
    if (ev.code === 4001) {
      signOut('Your session has ended. Please sign in again.');
      return;
    }
    if (ev.code === 4003) {
      setConn('offline');
      if (S.ban) showBanned(S.ban);
      else if (S.kicked) showKicked(`Reason: ${S.kicked}`);
      else if (ev.reason === 'banned') showKicked('This account is banned.');
      else showKicked(`Reason: ${ev.reason || 'no reason given'}`);
      return;
    }
    scheduleReconnect();
  }

  function send(frame) {
    if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
    S.ws.send(JSON.stringify(frame));
    return true;
  }

  // Sends a frame with an id; resolves with the ack's data, rejects with
  // the error's {code, message}.
  function request(type, data, timeout = REQUEST_TIMEOUT_MS) {
    return new Promise((resolve, reject) => {
      const id = `w-${S.nextId++}`;
      if (!send({ type, id, data })) {
        reject({ code: 'disconnected', message: 'not connected' });
        return;
      }
      const timer = setTimeout(() => {
        S.pending.delete(id);
        reject({ code: 'timeout', message: 'the server did not answer in time' });
      }, timeout);
      S.pending.set(id, { resolve, reject, timer });
    });
  }

  // Notices a connection that died without a close (a sleeping laptop, a
  // dropped Wi-Fi): no pong in time, and it is closed and replaced.
  function startPinging() {
    clearInterval(S.pingTimer);
    S.pingTimer = setInterval(() => {
      const ws = S.ws;
      request('ping', {}, 10000).catch((e) => {
        if (e.code === 'timeout' && ws && ws === S.ws) ws.close();
      });
    }, PING_EVERY_MS);
  }

  async function api(method, path, body) {
    const headers = { authorization: `Bearer ${S.token}` };
    let payload = body;
    if (body && !(body instanceof FormData)) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    let resp;
    try {
      resp = await fetch(path, { method, headers, body: payload });
    } catch {
      throw { code: 'network', message: 'the server cannot be reached' };
    }
    const text = await resp.text();
    let json = null;
    try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
    if (!resp.ok) {
      const err = (json && json.error) || {};
      if (resp.status === 401 && S.token) signOut('Your session has ended. Please sign in again.');
      throw { code: err.code || String(resp.status), message: err.message || resp.statusText };
    }
    return json;
  }

  // ------------------------------------------------------------- frames in

  function handleFrame(f) {
    const d = f.data && typeof f.data === 'object' ? f.data : {};
    if (typeof f.id === 'string' && S.pending.has(f.id)) {
      const p = S.pending.get(f.id);
      S.pending.delete(f.id);
      clearTimeout(p.timer);
      if (f.type === 'error') p.reject(d);
      else p.resolve(d);
      return;
    }
    switch (f.type) {
      case 'authenticated': onAuthenticated(d); break;
      case 'message': if (d.message) { countLive(d.message); addMessages(d.message.room, [d.message], true); onThreadReply(d.message); } break;
      case 'thread_reply': if (d.message) onThreadReply(d.message); break;
      case 'thread_unread': onThreadUnread(d); break;
      case 'unread': onUnread(d); break;
      case 'message_updated': if (d.message) { updateMessage(d.message); threadUpdated(d.message); } break;
      case 'message_deleted': onDeleted(d); threadDeleted(d); break;
      case 'typing': onTyping(d); break;
      case 'read': onRead(d); break;
      case 'user_online': if (d.user) { S.online.set(d.user.id, d.user); renderPeople(); refreshPresence(); peopleChanged(); } break;
      case 'user_offline': if (d.user) { S.online.delete(d.user.id); renderPeople(); refreshPresence(); peopleChanged(); } break;
      case 'member_joined': onMemberJoined(d); break;
      case 'member_left': onMemberLeft(d); break;
      case 'room_created': onRoomCreated(d.room); break;
      case 'room_updated': onRoomUpdated(d.room); break;
      case 'room_deleted': removeRoom(d.room_id, 'was deleted'); break;
      case 'announcement': onAnnouncement(d); break;
      case 'kicked':
        S.kicked = typeof d.reason === 'string' && d.reason ? d.reason : 'no reason given';
        if (d.ban && typeof d.ban === 'object') S.ban = d.ban;
        break;
      case 'muted': onMuted(d); break;
      case 'user_updated': if (d.user) onUserUpdated(d.user); break;
      case 'friend_request':
      case 'friend_accepted':
      case 'friend_declined':
      case 'friend_request_cancelled':
      case 'friend_removed':
        onFriendEvent(f.type, d);
        break;
      case 'unmuted': onUnmuted(d); break;
      case 'reaction_added': onReaction(d, true); break;
      case 'reaction_removed': onReaction(d, false); break;
      case 'message_pinned': onPinned(d, true); break;
      case 'message_unpinned': onPinned(d, false); break;
      case 'error':
        // A banned token's sign-in is refused with the ban; the close follows.
        if (d.ban && typeof d.ban === 'object') S.ban = d.ban;
        else if (d.code !== 'unauthorized') toast(d.message || d.code || 'error', 'bad');
        break;
      default: break; // later servers may add events; they are ignored
    }
  }

  function onAuthenticated(d) {
    if (!d.user) return;
    const first = !S.everConnected;
    S.me = d.user;
    storage.set(USER_KEY, JSON.stringify(d.user));
    if (first) S.reads = storage.json(readsKey(), {});
    S.social = null;
    S.everConnected = true;
    S.attempt = 0;
    S.kicked = null;
    S.ban = null;
    S.mutes = Array.isArray(d.mutes) ? d.mutes : [];
    S.incoming = Array.isArray(d.friend_requests) ? d.friend_requests.length : 0;
    renderFriendsBadge();
    setConn('connected');
    startPinging();
    loadThreadUnread();
    $('me-name').textContent = S.me.username;

    S.online.clear();
    for (const u of d.online_users || []) S.online.set(u.id, u);

    const rooms = Array.isArray(d.rooms) ? d.rooms : [];
    const ids = new Set(rooms.map((r) => r.id));
    for (const id of [...S.rooms.keys()]) if (!ids.has(id)) removeRoom(id);
    for (const r of rooms) {
      const rs = S.rooms.get(r.id);
      if (rs) rs.room = r;
      // A room this device has never seen: on the first connection it is
      // taken as read once loaded; one that appeared while we were away
      // (a new DM) is unread from the start.
      else S.rooms.set(r.id, newRoomState(r, S.reads[r.id] ?? (first ? null : 0)));
    }
    if (!S.current || (!isDraft(S.current) && !S.rooms.has(S.current))) {
      const saved = storage.get(`confab.room.${S.me.id}`);
      const pick = S.rooms.has(saved) ? saved : sortedRooms('room')[0]?.room.id
        || sortedRooms('dm')[0]?.room.id || null;
      S.current = pick;
    }
    setUnreadAll(d.unread);
    if (!S.divider) placeDivider(currentRoom());
    renderAll();
    loadQuiet();

    // Recovery (the protocol's guarantee 3): from each room's last seen seq
    // as it was when this connection opened; live messages that arrive
    // meanwhile are merged by seq.
    const cur = currentRoom();
    const order = [...S.rooms.values()].sort((a, b) => (b === cur) - (a === cur));
    Promise.allSettled(order.map((rs) => (rs.loaded ? catchUp(rs, rs.lastSeq) : loadLatest(rs))))
      .then(() => flushOutbox());
    refreshPresence();
    document.dispatchEvent(new CustomEvent('confab:connected'));
  }

  async function catchUp(rs, from) {
    let after = from;
    for (;;) {
      const page = await request('history', { room: rs.room.id, after, limit: 200 });
      const msgs = page.messages || [];
      addMessages(rs.room.id, msgs, false);
      if (!page.has_more || msgs.length === 0) break;
      after = msgs[msgs.length - 1].seq;
    }
    maybeMarkRead();
  }

  async function loadLatest(rs) {
    if (rs.loading) return;
    rs.loading = true;
    try {
      const page = await request('history', { room: rs.room.id, limit: PAGE });
      rs.hasMoreBefore = !!page.has_more;
      rs.loaded = true;
      addMessages(rs.room.id, page.messages || [], false);
      if (rs.readSeq == null) setReadSeq(rs, rs.lastSeq);
      renderSidebar();
      if (rs === currentRoom()) {
        renderTimeline(true);
        maybeMarkRead();
      }
    } finally {
      rs.loading = false;
    }
  }

  async function loadOlder(rs) {
    if (rs.loadingOlder || !rs.hasMoreBefore || !rs.loaded || rs.msgs.length === 0) return;
    rs.loadingOlder = true;
    renderHistoryState();
    try {
      const before = rs.msgs[0].seq;
      const page = await request('history', { room: rs.room.id, before, limit: PAGE });
      rs.hasMoreBefore = !!page.has_more;
      const tl = $('timeline');
      const fromBottom = tl.scrollHeight - tl.scrollTop;
      addMessages(rs.room.id, page.messages || [], false, true);
      if (rs === currentRoom()) {
        renderTimeline(false);
        tl.scrollTop = tl.scrollHeight - fromBottom;
      }
    } catch {
      // Tried again on the next scroll.
    } finally {
      rs.loadingOlder = false;
      renderHistoryState();
    }
    if (rs === currentRoom()) requestAnimationFrame(checkLoadOlder);
  }

  // Merges messages into a room by seq. `live` marks single events as
  // opposed to history pages.
  function addMessages(roomId, msgs, live, older) {
    const rs = S.rooms.get(roomId);
    if (!rs) {
      if (live) adoptRoom(roomId);
      return;
    }
    if (msgs.length === 0) return;
    const isCurrent = rs === currentRoom();
    const wasAtBottom = isCurrent && atBottom();
    let appendOnly = true;
    for (const m of msgs) {
      if (!m || typeof m.seq !== 'number') continue;
      settleOutbox(m);
      const i = indexOfSeq(rs.msgs, m.seq);
      if (i < rs.msgs.length && rs.msgs[i].seq === m.seq) {
        rs.msgs[i] = m;
        appendOnly = false;
      } else {
        if (i !== rs.msgs.length) appendOnly = false;
        rs.msgs.splice(i, 0, m);
      }
      if (m.seq > rs.lastSeq) rs.lastSeq = m.seq;
      if (live && m.sender && m.sender.id !== S.me.id) rs.typing.delete(m.sender.id);
    }
    renderSidebar();
    if (!isCurrent || older) return;
    if (appendOnly && rs.loaded) {
      const list = $('messages');
      for (const m of msgs) list.append(renderMessage(rs, m, prevOf(rs, m.seq)));
      renderSeen(rs);
    } else if (rs.loaded) {
      renderTimeline(false);
    }
    renderPending();
    renderTyping();
    if (wasAtBottom || msgs.some((m) => m.sender && m.sender.id === S.me.id && live)) {
      scrollToBottom();
    } else if (live) {
      $('jump').hidden = false;
    }
    maybeMarkRead();
  }

  function indexOfSeq(arr, seq) {
    let lo = 0;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (arr[mid].seq < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  function prevOf(rs, seq) {
    const i = indexOfSeq(rs.msgs, seq);
    return i > 0 ? rs.msgs[i - 1] : null;
  }

  function updateMessage(m) {
    const rs = S.rooms.get(m.room);
    if (!rs) return;
    const i = indexOfSeq(rs.msgs, m.seq);
    if (i >= rs.msgs.length || rs.msgs[i].seq !== m.seq) return; // not loaded here: history will show it
    keepMine(rs.msgs[i], m);
    rs.msgs[i] = m;
    if (S.editing && S.editing.id === m.id && m.deleted) S.editing = null;
    if (rs === currentRoom()) replaceMessageNode(rs, m);
  }

  function onDeleted(d) {
    const rs = S.rooms.get(d.room);
    if (!rs) return;
    const m = rs.msgs.find((x) => x.id === d.message_id);
    if (!m) return;
    updateMessage({ ...m, text: '', attachments: [], deleted: true });
  }

  function onTyping(d) {
    const rs = S.rooms.get(d.room);
    if (!rs || !d.user || d.user.id === S.me.id) return;
    const old = rs.typing.get(d.user.id);
    if (old) clearTimeout(old.timer);
    if (d.typing) {
      // The server clears typing after its own timeout; this is a backstop
      // for a `typing: false` lost with a connection.
      const timer = setTimeout(() => { rs.typing.delete(d.user.id); renderTyping(); }, 8000);
      rs.typing.set(d.user.id, { user: d.user, timer });
    } else {
      rs.typing.delete(d.user.id);
    }
    renderTyping();
  }

  function onRead(d) {
    const rs = S.rooms.get(d.room);
    if (!rs || !d.user || typeof d.seq !== 'number') return;
    if (d.user.id === S.me.id) {
      if (setReadSeq(rs, d.seq)) renderSidebar();
      return;
    }
    rs.readers.set(d.user.id, { user: d.user, seq: d.seq });
    if (rs === currentRoom()) renderSeen(rs);
  }

  async function adoptRoom(roomId) {
    if (S.rooms.has(roomId)) return;
    try {
      const r = await api('GET', `/api/rooms/${encodeURIComponent(roomId)}`);
      if (r && r.room && !S.rooms.has(roomId)) {
        addRoom(r.room, 0);
      }
    } catch { /* not ours after all */ }
  }

  function addRoom(room, readSeq) {
    let rs = S.rooms.get(room.id);
    if (!rs) {
      rs = newRoomState(room, S.reads[room.id] ?? readSeq);
      S.rooms.set(room.id, rs);
      if (S.conn === 'connected') loadLatest(rs).catch(() => {});
    } else {
      rs.room = room;
    }
    renderSidebar();
    return rs;
  }

  function onMemberJoined(d) {
    if (!d.user) return;
    S.members.delete(d.room);
    if (d.room === S.roomDialog) loadMembers();
    if (d.user.id === S.me.id) {
      // A join of our own is added by its ack, which carries last_seq.
      if (!S.rooms.has(d.room) && !S.joining.has(d.room)) adoptRoom(d.room);
      return;
    }
    if (d.room === S.current) refreshPresence();
  }

  function onMemberLeft(d) {
    if (!d.user) return;
    S.members.delete(d.room);
    if (d.room === S.roomDialog) loadMembers();
    if (d.user.id === S.me.id) removeRoom(d.room);
    else if (d.room === S.current) refreshPresence();
  }

  function onRoomCreated(room) {
    if (!room) return;
    // Public rooms are announced to everyone; only those we own are ours.
    const mine = room.kind === 'dm' || room.visibility === 'private' || room.owner === S.me.id;
    if (mine) addRoom(room, 0);
    if ($('directory-dialog').open) loadDirectory();
  }

  function onRoomUpdated(room) {
    if (!room) return;
    const rs = S.rooms.get(room.id);
    if (rs) {
      rs.room = room;
      renderSidebar();
      if (rs === currentRoom()) renderHeader();
    }
    if (room.id === S.roomDialog) $('room-dialog-title').textContent = `#${room.name}`;
    if ($('directory-dialog').open) loadDirectory();
  }

  function removeRoom(id, why) {
    const rs = S.rooms.get(id);
    if (!rs) return;
    if (id === S.roomDialog) $('room-dialog').close();
    S.rooms.delete(id);
    if (why) toast(`${roomLabel(rs.room)} ${why}`);
    if (S.current === id) {
      S.current = sortedRooms('room')[0]?.room.id || sortedRooms('dm')[0]?.room.id || null;
      renderAll();
    } else {
      renderSidebar();
    }
  }

  function onAnnouncement(d) {
    if (typeof d.text !== 'string') return;
    const rs = d.room ? S.rooms.get(d.room) : null;
    if (rs) {
      rs.notes.push({ afterSeq: rs.lastSeq, text: d.text, ts: Date.now() });
      if (rs === currentRoom()) {
        $('messages').append(renderNote(rs.notes[rs.notes.length - 1]));
        scrollToBottom();
      }
    }
    $('banner-title').textContent = rs ? `Announcement in ${roomLabel(rs.room)}` : 'Announcement';
    $('banner-text').textContent = d.text;
    $('banner').hidden = false;
  }

  function refreshPresence() {
    clearTimeout(S.presenceTimer);
    S.presenceTimer = setTimeout(async () => {
      const rs = currentRoom();
      if (!rs || S.conn !== 'connected') return;
      try {
        const r = await request('presence', { room: rs.room.id });
        if (rs !== currentRoom()) return;
        S.presence = r.users || [];
        for (const u of S.presence) S.online.set(u.id, u);
        renderHeader();
        renderPeople();
      } catch { /* shown again on the next change */ }
    }, 100);
  }

  // ------------------------------------------------------------ sending

  function settleOutbox(m) {
    if (!m.client_msg_id || !m.sender || m.sender.id !== S.me.id) return;
    const i = S.outbox.findIndex((e) => e.cid === m.client_msg_id);
    if (i >= 0) {
      S.outbox.splice(i, 1);
      renderPending();
    }
  }

  function submitComposer() {
    const input = $('input');
    const text = input.value;
    if (S.tray.some((t) => t.state === 'uploading')) {
      toast('Wait for the images to finish uploading.');
      return;
    }
    if (S.tray.some((t) => t.state === 'failed')) {
      toast('Remove the images that failed to upload first.', 'bad');
      return;
    }
    const attachments = S.tray.map((t) => t.att);
    if (!text.trim() && attachments.length === 0) return;
    if (!S.current) return;
    const entry = {
      cid: randomId(),
      key: S.current,
      text: text.trim() ? text : '',
      attachments,
      state: 'queued',
      error: null,
      noPreviews: $('no-previews').checked,
    };
    if (isDraft(S.current)) entry.to = S.current.slice(3);
    else entry.room = S.current;
    S.outbox.push(entry);
    input.value = '';
    autosize();
    clearTray();
    stopTyping();
    renderPending();
    scrollToBottom();
    trySend(entry);
  }

  async function trySend(entry) {
    if (entry.state === 'sending' || S.conn !== 'connected') return;
    entry.state = 'sending';
    entry.error = null;
    renderPending();
    const data = {
      text: entry.text,
      attachments: entry.attachments.map((a) => a.id),
      client_msg_id: entry.cid,
    };
    if (entry.noPreviews) data.previews = false;
    if (entry.to) data.to = entry.to;
    else data.room = entry.room;
    try {
      const r = await request('send_message', data);
      const m = r.message;
      if (!m) return;
      settleOutbox(m);
      if (entry.to) {
        // The first message of a DM creates its room; switch to it.
        if (!S.rooms.has(m.room)) await adoptRoom(m.room);
        if (S.current === entry.key) selectRoom(m.room);
      }
      addMessages(m.room, [m], true);
    } catch (e) {
      if (e.code === 'disconnected' || e.code === 'timeout') {
        // The same client_msg_id makes the retry safe: the server stores it once.
        entry.state = 'queued';
      } else if (e.code === 'rate_limited') {
        entry.state = 'queued';
        setTimeout(() => trySend(entry), 1000);
      } else {
        entry.state = 'failed';
        entry.error = e.message || e.code;
      }
      renderPending();
    }
  }

  function flushOutbox() {
    for (const e of S.outbox) if (e.state === 'queued') trySend(e);
  }

  function startTyping() {
    const rs = currentRoom();
    if (!rs || S.conn !== 'connected') return;
    const now = Date.now();
    if (S.typingRoom !== rs.room.id || now - S.typingSentAt > TYPING_EVERY_MS) {
      if (S.typingRoom && S.typingRoom !== rs.room.id) stopTyping();
      S.typingRoom = rs.room.id;
      S.typingSentAt = now;
      request('typing_start', { room: rs.room.id }).catch(() => {});
    }
    clearTimeout(S.typingIdleTimer);
    S.typingIdleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
  }

  function stopTyping() {
    clearTimeout(S.typingIdleTimer);
    if (!S.typingRoom) return;
    const room = S.typingRoom;
    S.typingRoom = null;
    S.typingSentAt = 0;
    request('typing_stop', { room }).catch(() => {});
  }

  // ------------------------------------------------------------- uploads

  // The server's default `uploads.max_bytes`. No endpoint tells the client
  // the configured value, so a file over this is refused here, before any of
  // it is sent; a server set lower still answers too_large, which is shown.
  const UPLOAD_MAX_BYTES = 5 * 1024 * 1024;
  const UPLOAD_TYPES = ['image/jpeg', 'image/png', 'image/gif', 'image/webp'];
  // The server's default `uploads.max_file_bytes`, for anything else.
  const FILE_MAX_BYTES = 25 * 1024 * 1024;

  // Sizes in megabytes of 1024 × 1024 bytes, as the limit is set. A size is
  // rounded up so a file just over the limit never reads as equal to it.
  function megabytes(bytes, up) {
    const tenths = (up ? Math.ceil : Math.round)((bytes / (1024 * 1024)) * 10);
    return `${tenths % 10 === 0 ? tenths / 10 : (tenths / 10).toFixed(1)} MB`;
  }

  function uploadProblem(file, imagesOnly) {
    if (!UPLOAD_TYPES.includes(file.type)) {
      if (imagesOnly) return `${file.name || 'That file'} cannot be used: only JPEG, PNG, GIF and WebP images can.`;
      if (file.size > FILE_MAX_BYTES) {
        return `${file.name || 'This file'} is ${megabytes(file.size, true)}; the limit is ${megabytes(FILE_MAX_BYTES)}.`;
      }
      return null;
    }
    if (file.size > UPLOAD_MAX_BYTES) {
      return `${file.name || 'This image'} is ${megabytes(file.size, true)}; the limit is ${megabytes(UPLOAD_MAX_BYTES)}.`;
    }
    return null;
  }

  function uploadError(e) {
    switch (e.code) {
      case 'too_large': return 'Too large for this server, in file size or in pixels.';
      case 'unsupported_media_type': return e.message && !/image/.test(e.message) ? 'This server does not accept this type of file.' : 'Not a JPEG, PNG, GIF or WebP image that can be read.';
      case 'forbidden': return /quota/.test(e.message || '') ? 'Your storage quota is used up; delete old files first.' : 'The upload was refused.';
      case 'rate_limited': return 'Too many uploads just now; try again in a minute.';
      case 'network': return 'The server cannot be reached; try again.';
      default: return 'The upload failed; try again.';
    }
  }

  function addFiles(files) {
    for (const file of files) {
      const problem = uploadProblem(file);
      if (problem) {
        toast(problem, 'bad');
        continue;
      }
      if (S.tray.length >= 10) {
        toast('At most 10 images per message.', 'bad');
        break;
      }
      const isImage = UPLOAD_TYPES.includes(file.type);
      const item = { file, preview: isImage ? URL.createObjectURL(file) : null, state: 'uploading', att: null, error: null };
      S.tray.push(item);
      upload(item);
    }
    renderTray();
  }

  async function upload(item) {
    const form = new FormData();
    form.append('file', item.file, item.file.name || 'file');
    try {
      item.att = await api('POST', '/api/uploads', form);
      item.state = 'done';
    } catch (e) {
      item.state = 'failed';
      item.error = uploadError(e);
    }
    renderTray();
  }

  function clearTray() {
    for (const t of S.tray) if (t.preview) URL.revokeObjectURL(t.preview);
    S.tray = [];
    renderTray();
  }

  function renderTray() {
    const tray = $('tray');
    tray.hidden = S.tray.length === 0;
    tray.replaceChildren(...S.tray.map((t) => {
      const status = t.state === 'uploading' ? 'uploading…' : t.state === 'failed' ? t.error : 'ready';
      return h('li', { class: `tray-item ${t.state}` },
        t.preview
          ? h('img', { src: t.preview, alt: t.file.name || 'image to send' })
          : h('span', { class: 'tray-file' }, t.file.name || 'file'),
        h('span', { class: 'tray-status' }, status),
        h('button', {
          type: 'button',
          class: 'icon remove',
          'aria-label': `Remove ${t.file.name || 'image'}`,
          onclick: () => {
            if (t.preview) URL.revokeObjectURL(t.preview);
            S.tray = S.tray.filter((x) => x !== t);
            renderTray();
            $('input').focus();
          },
        }, '×'));
    }));
    $('send').disabled = S.tray.some((t) => t.state === 'uploading') || !$('mute-notice').hidden;
  }

  // ------------------------------------------------------------ rendering

  function sortedRooms(kind) {
    const list = [...S.rooms.values()].filter((r) => r.room.kind === kind);
    if (kind === 'dm') {
      const latest = (r) => (r.msgs.length ? r.msgs[r.msgs.length - 1].created_at : r.room.created_at);
      return list.sort((a, b) => latest(b) - latest(a));
    }
    return list.sort((a, b) => a.room.name.localeCompare(b.room.name));
  }

  function renderAll() {
    renderSidebar();
    renderPeople();
    renderHeader();
    renderTimeline(true);
    renderPending();
    renderTyping();
  }

  function convItem(rs) {
    const n = unread(rs);
    const current = rs.room.id === S.current;
    const label = roomLabel(rs.room);
    const online = rs.room.kind === 'dm' && [...S.online.values()].some((u) => u.username === dmPeer(rs.room));
    return h('li', null, h('button', {
      type: 'button',
      class: `conv${n ? ' unread' : ''}${current ? ' current' : ''}`,
      'aria-current': current ? 'page' : null,
      dataset: { room: rs.room.id, name: label },
      onclick: () => selectRoom(rs.room.id),
    },
    h('span', { class: `glyph${online ? ' online' : ''}`, 'aria-hidden': 'true' }, rs.room.kind === 'dm' ? '@' : '#'),
    h('span', { class: 'conv-name' }, label),
    rs.room.visibility === 'private' && rs.room.kind === 'room' ? h('span', { class: 'lock muted', title: 'private' }, 'private') : null,
    mentionBadge(rs),
    n ? unreadBadge(n, S.quiet.has(rs.room.id)) : null));
  }

  function unreadBadge(n, quiet) {
    const label = `${n} unread${quiet ? ', muted' : ''}`;
    return h('span', { class: `badge${quiet ? ' quiet' : ''}`, 'aria-label': label, title: label }, n > 99 ? '99+' : String(n));
  }

  // What the notification settings say of each room, for the badges.
  async function loadQuiet() {
    try {
      const s = await api('GET', '/api/me/notifications');
      S.quiet = new Set((s.rooms || []).filter(quietSetting).map((r) => r.room));
      renderSidebar();
    } catch { /* badges stay as they are: the settings are not essential */ }
  }
  const quietSetting = (r) => !!r.muted || r.level === 'nothing';

  function renderSidebar() {
    if (!S.me) return;
    const rooms = sortedRooms('room');
    $('room-list').replaceChildren(...rooms.map(convItem));
    if (rooms.length === 0) $('room-list').append(h('li', { class: 'muted small none' }, 'No rooms yet'));
    const dms = sortedRooms('dm');
    const items = dms.map(convItem);
    if (isDraft(S.current) && !findDm(S.current.slice(3))) {
      items.unshift(h('li', null, h('button', { type: 'button', class: 'conv current', 'aria-current': 'page' },
        h('span', { class: 'glyph', 'aria-hidden': 'true' }, '@'),
        h('span', { class: 'conv-name' }, S.current.slice(3)))));
    }
    $('dm-list').replaceChildren(...items);
    if (items.length === 0) $('dm-list').append(h('li', { class: 'muted small none' }, 'No conversations yet'));
    let total = 0;
    for (const rs of S.rooms.values()) if (!S.quiet.has(rs.room.id)) total += unread(rs);
    document.title = total ? `(${total}) confab` : 'confab';
    showCountInIcon(total, totalMentions());
    const badge = $('menu-badge');
    badge.hidden = total === 0;
    badge.textContent = String(total);
  }

  function renderPeople() {
    if (!S.me) return;
    const people = [...S.online.values()]
      .filter((u) => u.id !== S.me.id)
      .sort((a, b) => a.username.localeCompare(b.username));
    const list = $('online-list');
    list.replaceChildren(...people.map((u) => h('li', null, h('button', {
      type: 'button',
      class: 'person',
      title: `Message ${u.username}`,
      onclick: () => openDm(u.username),
    }, h('span', { class: 'dot', 'aria-hidden': 'true' }), u.username,
    u.role !== 'user' ? h('span', { class: 'role muted' }, u.role) : null))));
    if (people.length === 0) list.append(h('li', { class: 'muted small none' }, 'Nobody else is online'));
    $('dm-suggestions').replaceChildren(...people.map((u) => h('option', { value: u.username })));
  }

  function renderHeader() {
    const rs = currentRoom();
    const leave = $('leave-room');
    if (isDraft(S.current)) {
      $('room-name').textContent = `@${S.current.slice(3)}`;
      $('room-topic').textContent = 'New conversation';
      $('room-presence').textContent = '';
      leave.hidden = true;
    } else if (rs) {
      $('room-name').textContent = `${rs.room.kind === 'dm' ? '@' : '#'}${roomLabel(rs.room)}`;
      $('room-topic').textContent = rs.room.kind === 'dm' ? 'Direct message' : rs.room.topic || '';
      const names = S.presence.map((u) => u.username);
      $('room-presence').textContent = names.length ? `${names.length} online` : '';
      $('room-presence').title = names.join(', ');
      leave.hidden = rs.room.kind === 'dm';
      $('room-notify').hidden = false;
    } else {
      $('room-name').textContent = 'confab';
      $('room-topic').textContent = '';
      $('room-presence').textContent = '';
      leave.hidden = true;
    }
    if (!rs || isDraft(S.current)) $('room-notify').hidden = true;
    const has = !!S.current;
    $('composer').hidden = !has;
    $('empty').hidden = has;
    renderHeaderTools();
  }

  function renderHistoryState() {
    const rs = currentRoom();
    const el = $('history-state');
    if (!rs) {
      el.textContent = isDraft(S.current)
        ? `This is the start of your conversation with ${S.current.slice(3)}. Your first message opens it.`
        : '';
      return;
    }
    if (!rs.loaded || rs.loadingOlder) el.textContent = 'Loading messages…';
    else if (rs.hasMoreBefore) el.textContent = 'Scroll up for earlier messages';
    else el.textContent = rs.room.kind === 'dm'
      ? `This is the start of your conversation with ${roomLabel(rs.room)}.`
      : `This is the start of #${rs.room.name}.`;
  }

  function renderTimeline(toBottom) {
    const rs = currentRoom();
    const list = $('messages');
    const nodes = [];
    if (rs) {
      let prev = null;
      let n = 0;
      const first = firstUnread(rs);
      for (const m of rs.msgs) {
        while (n < rs.notes.length && rs.notes[n].afterSeq < m.seq) nodes.push(renderNote(rs.notes[n++]));
        if (m === first) nodes.push(renderDivider());
        nodes.push(renderMessage(rs, m, prev));
        prev = m;
      }
      while (n < rs.notes.length) nodes.push(renderNote(rs.notes[n++]));
    }
    list.replaceChildren(...nodes);
    if (rs) renderSeen(rs);
    renderHistoryState();
    renderMute();
    if (toBottom) {
      scrollToBottom();
      requestAnimationFrame(checkLoadOlder);
    }
  }

  function renderNote(note) {
    return h('li', { class: 'note', role: 'note' },
      h('strong', null, 'Announcement: '), note.text,
      h('time', { class: 'muted small', datetime: new Date(note.ts).toISOString() }, ` ${when(note.ts)}`));
  }

  function renderMessage(rs, m, prev) {
    const mine = m.sender && m.sender.id === S.me.id;
    const staff = S.me.role === 'moderator' || S.me.role === 'admin';
    const continued = prev && !prev.deleted && prev.sender.id === m.sender.id
      && m.created_at - prev.created_at < 5 * 60 * 1000;
    const forMe = !m.deleted && Array.isArray(m.mentions) && m.mentions.includes(S.me.id);
    const li = h('li', {
      class: `msg${mine ? ' mine' : ''}${continued ? ' cont' : ''}${m.deleted ? ' deleted' : ''}${forMe ? ' mentions-me' : ''}${m.sender ? ' with-avatar' : ''}`,
      dataset: { id: m.id, seq: String(m.seq) },
      // The timeline is one Tab stop with a roving focus (see wireTimeline):
      // one message takes Tab, the rest are reached with the arrow keys. A
      // tap focuses a message too, which shows its actions on touch screens.
      tabindex: m.id === S.rovingId ? '0' : '-1',
    });
    const head = h('div', { class: 'msg-head' },
      // Out of the Tab order like the actions: P on the focused message
      // opens the same profile.
      m.sender && m.sender.username !== '[deleted]'
        ? h('button', { type: 'button', class: 'sender', tabindex: '-1', 'aria-keyshortcuts': 'P', onclick: () => openProfile(m.sender.username, { room: m.room }) }, m.sender.username)
        : h('span', { class: 'sender' }, m.sender ? m.sender.username : '?'),
      // A hook's post may name itself; the account stays visible beside it.
      m.display_name ? h('span', { class: 'display-name muted' }, h('bdi', {}, m.display_name)) : null,
      m.bot || (m.sender && m.sender.bot) ? h('span', { class: 'bot-badge muted', title: 'sent by a bot or a webhook' }, 'bot') : null,
      m.sender && m.sender.role !== 'user' ? h('span', { class: 'role muted' }, m.sender.role) : null,
      h('time', { class: 'muted', datetime: new Date(m.created_at).toISOString(), title: fullFmt.format(new Date(m.created_at)) }, when(m.created_at)));
    li.append(head);
    if (m.sender && !continued) li.append(avatar(m.sender));

    if (m.deleted) {
      li.append(h('p', { class: 'body muted' }, 'message deleted'));
      const link = threadLink(m);
      if (link) li.append(link);
      return li;
    }
    if (S.editing && S.editing.id === m.id) {
      li.append(renderEditor(m));
      return li;
    }
    if (m.text) {
      // <bdi>: direction marks and overrides in a message stay inside it
      // and cannot reorder the '(edited)' note or anything around it.
      li.append(h('p', { class: 'body' }, h('bdi', {}, withMentions(richText(m.text), forMe)),
        m.edited_at ? h('span', { class: 'edited muted', title: `edited ${fullFmt.format(new Date(m.edited_at))}` }, ' (edited)') : null));
    }
    if (Array.isArray(m.attachments) && m.attachments.length) {
      li.append(h('div', { class: `attachments${m.attachments.length > 1 ? ' many' : ''}` }, m.attachments.map(renderAttachment)));
    }
    if (Array.isArray(m.previews) && m.previews.length) {
      li.append(h('div', { class: 'previews' }, m.previews.map(renderPreview)));
    }
    const link = threadLink(m);
    if (link) li.append(link);
    if (Array.isArray(m.reactions) && m.reactions.length) li.append(renderReactions(m));
    // Out of the Tab order: two stops per message made the timeline a long
    // walk. The keys on a focused message do the same (see wireTimeline).
    const pinner = mayPin(rs);
    li.append(h('div', { class: 'msg-actions' },
      h('button', { type: 'button', class: 'link msg-reply', tabindex: '-1', 'aria-keyshortcuts': 'T', onclick: () => openThread(m.reply_to || m.id) }, 'Reply'),
      h('button', { type: 'button', class: 'link msg-react', tabindex: '-1', 'aria-keyshortcuts': 'R', 'aria-haspopup': 'dialog', onclick: () => openPicker(m) }, 'React'),
      pinner ? h('button', { type: 'button', class: 'link msg-pin', tabindex: '-1', 'aria-keyshortcuts': 'I', onclick: () => togglePin(m) }, m.pinned ? 'Unpin' : 'Pin') : null,
      mine ? h('button', { type: 'button', class: 'link msg-edit', tabindex: '-1', 'aria-keyshortcuts': 'E Enter', onclick: () => startEdit(m) }, 'Edit') : null,
      !mine && staff ? h('button', { type: 'button', class: 'link msg-moderate', tabindex: '-1', 'aria-keyshortcuts': 'M', onclick: () => openProfile(m.sender.username, { room: m.room, moderate: true }) }, 'Moderate') : null,
      mine || staff ? h('button', { type: 'button', class: 'link danger msg-delete', tabindex: '-1', 'aria-keyshortcuts': 'D Delete', onclick: () => confirmDelete(m) }, 'Delete') : null));
    if (m.pinned) head.append(h('span', { class: 'pinned-mark muted', title: 'Pinned' }, ' · pinned'));
    return li;
  }

  // Sizes as people read them: bytes, then KB and MB of 1024.
  function fileSize(bytes) {
    const n = Number(bytes) || 0;
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${Math.round(n / 1024)} KB`;
    return megabytes(n);
  }

  // Only confab's own paths: an attachment never points a browser elsewhere.
  function ownUrl(u, prefix) {
    return typeof u === 'string' && u.startsWith(prefix) ? safeUrl(u) : null;
  }

  // Audio and video play in the page's own players, fed from confab (the
  // file itself is served as a download, sandboxed); anything else is a
  // tile with its name, size and a download link.
  function renderAttachment(a) {
    const kind = a.kind || 'image';
    if (kind !== 'image') {
      const url = ownUrl(a.url, '/uploads/');
      if (!url) return null;
      const name = a.name || 'file';
      const link = h('a', { class: 'file-download', href: url, download: name, 'aria-label': `Download ${name} (${fileSize(a.size)})` },
        h('span', { class: 'file-name' }, h('bdi', {}, name)), h('span', { class: 'file-size muted small' }, fileSize(a.size)));
      if (kind === 'audio') {
        return h('div', { class: 'file-tile media' }, h('audio', { controls: '', preload: 'none', src: url, 'aria-label': name }), link);
      }
      if (kind === 'video') {
        return h('div', { class: 'file-tile media' }, h('video', { controls: '', preload: 'metadata', src: url, 'aria-label': name, width: 320 }), link);
      }
      return h('div', { class: 'file-tile' }, link);
    }
    const thumb = safeUrl(a.thumb_url);
    const full = safeUrl(a.url);
    if (!thumb || !full) return null;
    // The thumbnail's size, worked out from the original's, reserves the
    // space before it loads, so the timeline does not jump.
    const w = Number(a.width) || 320;
    const hgt = Number(a.height) || 240;
    const scale = Math.min(1, 320 / Math.max(w, hgt));
    return h('button', {
      type: 'button',
      class: 'thumb',
      'aria-label': `Open image (${w}×${hgt})`,
      onclick: () => openImage(full),
    }, h('img', {
      src: thumb,
      alt: 'image',
      width: Math.max(1, Math.round(w * scale)),
      height: Math.max(1, Math.round(hgt * scale)),
      loading: 'lazy',
      decoding: 'async',
    }));
  }

  // A link's card: what the page says about itself, its picture served by
  // confab. The link is the only way out to the site.
  function renderPreview(p) {
    const href = safeUrl(p.url);
    if (!href) return null;
    let host = '';
    try { host = new URL(href).hostname; } catch { /* safeUrl parsed it */ }
    const img = ownUrl(p.image_url, '/previews/');
    return h('a', { class: 'preview-card', href, target: '_blank', rel: 'noopener noreferrer nofollow ugc' },
      img ? h('img', { src: img, alt: '', loading: 'lazy', decoding: 'async', width: Number(p.image_width) || undefined, height: Number(p.image_height) || undefined }) : null,
      h('span', { class: 'preview-text' },
        h('span', { class: 'preview-site muted small' }, p.site_name || host),
        p.title ? h('strong', { class: 'preview-title' }, h('bdi', {}, p.title)) : null,
        p.description ? h('span', { class: 'preview-description small' }, h('bdi', {}, p.description)) : null));
  }

  function replaceMessageNode(rs, m) {
    const node = $('messages').querySelector(`li[data-seq="${Number(m.seq)}"]`);
    if (!node) return;
    // A message updated while focused (a new reply count, an edit) keeps
    // the focus, so keys pressed on it still reach it.
    const focused = node === document.activeElement;
    const fresh = renderMessage(rs, m, prevOf(rs, m.seq));
    node.replaceWith(fresh);
    if (focused) fresh.focus();
    renderSeen(rs);
  }

  // "Seen by" under the message each other member has read up to.
  function renderSeen(rs) {
    const list = $('messages');
    for (const el of list.querySelectorAll('.seen')) el.remove();
    const bySeq = new Map();
    for (const { user, seq } of rs.readers.values()) {
      const at = Math.min(seq, rs.lastSeq);
      if (!bySeq.has(at)) bySeq.set(at, []);
      bySeq.get(at).push(user.username);
    }
    for (const [seq, names] of bySeq) {
      const node = list.querySelector(`li[data-seq="${Number(seq)}"]`);
      if (node) node.append(h('p', { class: 'seen muted small' }, `Seen by ${names.sort().join(', ')}`));
    }
  }

  function renderPending() {
    const list = $('pending');
    const mine = S.outbox.filter((e) => e.key === S.current || e.room === S.current);
    list.replaceChildren(...mine.map((e) => {
      const status = e.state === 'failed'
        ? `Not sent: ${e.error}`
        : S.conn === 'connected' ? 'sending…' : 'waiting for the connection…';
      return h('li', { class: `msg mine pending ${e.state}` },
        h('div', { class: 'msg-head' }, h('span', { class: 'sender' }, S.me ? S.me.username : ''),
          h('span', { class: 'muted small status' }, status)),
        e.text ? h('p', { class: 'body' }, h('bdi', {}, e.text)) : null,
        e.attachments.length ? h('div', { class: 'attachments' }, e.attachments.map(renderAttachment)) : null,
        e.state === 'failed' ? h('div', { class: 'msg-actions shown' },
          h('button', { type: 'button', class: 'link', onclick: () => { e.state = 'queued'; trySend(e); } }, 'Retry'),
          h('button', { type: 'button', class: 'link danger', onclick: () => { S.outbox = S.outbox.filter((x) => x !== e); renderPending(); } }, 'Discard')) : null);
    }));
  }

  function renderTyping() {
    const rs = currentRoom();
    const names = rs ? [...rs.typing.values()].map((t) => t.user.username).sort() : [];
    const el = $('typing');
    if (names.length === 0) el.textContent = '';
    else if (names.length === 1) el.textContent = `${names[0]} is typing…`;
    else if (names.length <= 3) el.textContent = `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]} are typing…`;
    else el.textContent = 'Several people are typing…';
  }

  function atBottom() {
    const tl = $('timeline');
    return tl.scrollHeight - tl.scrollTop - tl.clientHeight < 48;
  }

  // Whether the timeline follows its newest line. Only scrolling changes
  // it, so a timeline that shrinks (an on-screen keyboard) or whose last
  // message grows (a Retry row, an image that loads) stays at the bottom.
  let stickToBottom = true;

  function scrollToBottom() {
    const tl = $('timeline');
    tl.scrollTop = tl.scrollHeight;
    stickToBottom = true;
    $('jump').hidden = true;
  }

  function checkLoadOlder() {
    const rs = currentRoom();
    if (rs && $('timeline').scrollTop < 200) loadOlder(rs);
  }

  // ------------------------------------------------------------- actions

  function selectRoom(key) {
    if (S.current !== key) {
      stopTyping();
      S.editing = null;
      S.presence = [];
    }
    if (S.current !== key) placeDivider(S.rooms.get(key) || null);
    S.current = key;
    closeMentions();
    if (S.me && key && !isDraft(key)) storage.set(`confab.room.${S.me.id}`, key);
    document.body.classList.remove('nav-open');
    $('menu').setAttribute('aria-expanded', 'false');
    $('scrim').hidden = true;
    renderAll();
    const rs = currentRoom();
    if (rs && !rs.loaded && S.conn === 'connected') loadLatest(rs).catch(() => {});
    refreshPresence();
    maybeMarkRead();
    if (window.matchMedia('(min-width: 721px)').matches) $('input').focus();
  }

  function openDm(username) {
    const name = username.trim().toLowerCase();
    const existing = findDm(name);
    selectRoom(existing ? existing.room.id : `dm:${name}`);
    $('input').focus();
  }

  function startEdit(m) {
    S.editing = { id: m.id };
    const rs = S.rooms.get(m.room);
    if (rs) replaceMessageNode(rs, m);
    const ta = $('messages').querySelector(`li[data-seq="${Number(m.seq)}"] textarea`);
    if (ta) {
      ta.focus();
      ta.setSelectionRange(ta.value.length, ta.value.length);
    }
  }

  function renderEditor(m) {
    const cancel = () => {
      S.editing = null;
      const rs = S.rooms.get(m.room);
      if (rs) replaceMessageNode(rs, rs.msgs.find((x) => x.id === m.id) || m);
      $('input').focus();
    };
    const save = async () => {
      const text = ta.value;
      if (text === m.text) { cancel(); return; }
      if (!text.trim()) { toast('A message cannot be empty: use Delete to remove it.', 'bad'); return; }
      try {
        const r = await request('edit_message', { message_id: m.id, text });
        S.editing = null;
        if (r.message) updateMessage(r.message);
        $('input').focus();
      } catch (e) {
        toast(`Not saved: ${e.message || e.code}`, 'bad');
      }
    };
    const ta = h('textarea', { class: 'edit-input', rows: '2', 'aria-label': 'Edit message' });
    ta.value = m.text;
    ta.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) { ev.preventDefault(); save(); }
      else if (ev.key === 'Escape') { ev.preventDefault(); ev.stopPropagation(); cancel(); }
    });
    return h('div', { class: 'editor' }, ta,
      h('div', { class: 'actions' },
        h('span', { class: 'muted small' }, 'Enter saves · Esc cancels'),
        h('button', { type: 'button', onclick: cancel }, 'Cancel'),
        h('button', { type: 'button', class: 'primary', onclick: save }, 'Save')));
  }

  // ---------------------------------------------------------------- search

  // GET /api/search as the `search` frame: results newest first, each with
  // a snippet whose matches are [start, end) offsets in UTF-16 units, the
  // unit of JavaScript strings, so they slice the snippet directly.
  const SEARCH_PAGE = 20;
  const searchState = { q: '', cursor: null, busy: false };

  function openSearch() {
    const dlg = $('search-dialog');
    if (!dlg.open) dlg.showModal();
    const input = $('search-input');
    input.focus();
    input.select();
  }

  // The snippet as text nodes and <mark>s: never markup from the server.
  function markedSnippet(sn) {
    const text = (sn && typeof sn.text === 'string') ? sn.text : '';
    const out = [];
    let at = 0;
    for (const r of (sn && Array.isArray(sn.highlights)) ? sn.highlights : []) {
      const a = Math.max(at, Number(r[0]) || 0);
      const b = Math.min(text.length, Number(r[1]) || 0);
      if (b <= a) continue;
      if (a > at) out.push(text.slice(at, a));
      out.push(h('mark', null, text.slice(a, b)));
      at = b;
    }
    if (at < text.length) out.push(text.slice(at));
    return out;
  }

  function renderHit(r) {
    const m = r.message;
    const known = S.rooms.get(r.room.id);
    const room = known ? known.room : r.room;
    const where = room.kind === 'dm' ? roomLabel(room) : `#${room.name}`;
    const sender = m.sender ? m.sender.username : '?';
    return h('li', null, h('button', {
      type: 'button',
      class: 'search-hit',
      onclick: () => jumpTo(m),
    },
    h('span', { class: 'search-meta' },
      h('span', { class: 'search-room' }, where), ' · ',
      h('span', { class: 'sender' }, sender), ' · ',
      h('time', { datetime: new Date(m.created_at).toISOString(), title: fullFmt.format(new Date(m.created_at)) }, when(m.created_at))),
    h('span', { class: 'search-snippet' }, h('bdi', {}, markedSnippet(r.snippet)))));
  }

  async function runSearch(more) {
    if (searchState.busy) return;
    const state = $('search-state');
    const list = $('search-results');
    if (!more) {
      searchState.q = $('search-input').value.trim();
      searchState.cursor = null;
      list.replaceChildren();
      $('search-more').hidden = true;
    }
    if (!searchState.q) {
      state.textContent = '';
      return;
    }
    const data = { q: searchState.q, limit: SEARCH_PAGE };
    if (more && searchState.cursor) data.cursor = searchState.cursor;
    searchState.busy = true;
    state.textContent = 'Searching…';
    try {
      const page = S.conn === 'connected'
        ? await request('search', data)
        : await api('GET', `/api/search?${new URLSearchParams(data)}`);
      const results = Array.isArray(page.results) ? page.results : [];
      list.append(...results.map(renderHit));
      searchState.cursor = page.next_cursor || null;
      $('search-more').hidden = !searchState.cursor;
      const n = list.children.length;
      state.textContent = n === 0
        ? 'No messages match.'
        : `${n} message${n === 1 ? '' : 's'}${searchState.cursor ? ' so far' : ''}. Enter a result to see it in its conversation.`;
    } catch (e) {
      state.textContent = `Search failed: ${e.message || e.code}`;
    } finally {
      searchState.busy = false;
    }
  }

  // Shows a message in its conversation: older history is read back until
  // it is loaded, then it is scrolled to, marked and focused.
  async function jumpTo(m) {
    const rs = S.rooms.get(m.room);
    if (!rs) {
      toast('That conversation is no longer in your list.', 'bad');
      return;
    }
    $('search-dialog').close();
    selectRoom(rs.room.id);
    try {
      for (let i = 0; i < 100 && !rs.loaded; i++) {
        if (!rs.loading) await loadLatest(rs);
        else await new Promise((r) => setTimeout(r, 50));
      }
      for (let i = 0; i < 50 && rs.hasMoreBefore && rs.msgs.length && rs.msgs[0].seq > m.seq; i++) {
        const page = await request('history', { room: rs.room.id, before: rs.msgs[0].seq, limit: 200 });
        rs.hasMoreBefore = !!page.has_more;
        addMessages(rs.room.id, page.messages || [], false, true);
      }
    } catch (e) {
      toast(`Could not load that message: ${e.message || e.code}`, 'bad');
      return;
    }
    if (rs !== currentRoom()) return;
    S.rovingId = m.id;
    renderTimeline(false);
    const li = $('messages').querySelector(`li[data-id="${CSS.escape(m.id)}"]`);
    if (!li) {
      toast('That message is too far back to show here.', 'bad');
      return;
    }
    for (const old of $('messages').querySelectorAll('li.hit')) old.classList.remove('hit');
    li.classList.add('hit');
    li.scrollIntoView({ block: 'center' });
    li.focus({ preventScroll: true });
  }

  function wireSearch() {
    $('open-search').addEventListener('click', openSearch);
    $('search-form').addEventListener('submit', (ev) => { ev.preventDefault(); runSearch(false); });
    $('search-more').addEventListener('click', () => runSearch(true));
    document.addEventListener('keydown', (ev) => {
      if ($('chat').hidden || document.querySelector('dialog[open]')) return;
      const t = ev.target;
      const typing = t instanceof HTMLElement && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName));
      const ctrlK = (ev.ctrlKey || ev.metaKey) && !ev.altKey && ev.key.toLowerCase() === 'k';
      if (ctrlK || (ev.key === '/' && !typing && !ev.ctrlKey && !ev.metaKey && !ev.altKey)) {
        ev.preventDefault();
        openSearch();
      }
    });
  }

  function confirmDialog(text, okLabel) {
    const dlg = $('confirm-dialog');
    $('confirm-text').textContent = text;
    $('confirm-ok').textContent = okLabel;
    dlg.returnValue = '';
    dlg.showModal();
    return new Promise((resolve) => {
      dlg.addEventListener('close', () => resolve(dlg.returnValue === 'ok'), { once: true });
    });
  }

  async function confirmDelete(m) {
    const mine = m.sender && S.me && m.sender.id === S.me.id;
    if (!mine) {
      confirmModeratorDelete(m);
      return;
    }
    if (!(await confirmDialog('Delete this message? Everyone will see that it was deleted.', 'Delete'))) return;
    try {
      await request('delete_message', { message_id: m.id });
    } catch (e) {
      toast(`Not deleted: ${e.message || e.code}`, 'bad');
    }
  }

  function openImage(url) {
    $('image-full').src = url;
    $('image-open').href = url;
    $('image-dialog').showModal();
  }

  function showKicked(text) {
    $('kicked-title').textContent = 'Disconnected by a moderator';
    $('kicked-reconnect').hidden = false;
    $('kicked-text').textContent = text;
    const dlg = $('kicked-dialog');
    if (!dlg.open) dlg.showModal();
  }

  async function loadDirectory() {
    const state = $('directory-state');
    state.textContent = 'Loading…';
    try {
      const r = await api('GET', '/api/rooms');
      const rooms = (r.rooms || []).filter((x) => x.kind === 'room');
      const list = $('directory-list');
      list.replaceChildren(...rooms.map((room) => {
        const member = S.rooms.has(room.id);
        return h('li', { class: 'dir-item' },
          h('div', { class: 'dir-text' },
            h('strong', null, `#${room.name}`),
            room.visibility === 'private' ? h('span', { class: 'muted small' }, ' private') : null,
            room.topic ? h('p', { class: 'muted small' }, room.topic) : null),
          h('button', {
            type: 'button',
            class: member ? '' : 'primary',
            'aria-label': `${member ? 'Open' : 'Join'} ${room.name}`,
            onclick: () => joinRoom(room),
          }, member ? 'Open' : 'Join'));
      }));
      state.textContent = rooms.length ? '' : 'No rooms yet: create the first one.';
    } catch (e) {
      state.textContent = `Cannot list rooms: ${e.message}`;
    }
  }

  async function joinRoom(room) {
    if (S.rooms.has(room.id)) {
      $('directory-dialog').close();
      selectRoom(room.id);
      return;
    }
    S.joining.add(room.id);
    try {
      const r = await request('join_room', { room: room.id });
      // Joining starts with the room's history shown and taken as read.
      addRoom(r.room || room, r.last_seq || 0);
      $('directory-dialog').close();
      selectRoom(room.id);
    } catch (e) {
      $('directory-state').textContent = `Cannot join #${room.name}: ${e.message || e.code}`;
    } finally {
      S.joining.delete(room.id);
    }
  }

  // ---------------------------------------------------- being moderated

  const ROLE_RANK = { user: 0, moderator: 1, admin: 2 };
  const isStaff = () => !!S.me && (S.me.role === 'moderator' || S.me.role === 'admin');
  const outranks = (user) => !!S.me && (ROLE_RANK[S.me.role] || 0) > (ROLE_RANK[user.role] || 0);

  /** "until Wed, 2 December 2026 at 14:10:00", or "until it is lifted". */
  function untilText(until) {
    return typeof until === 'number' ? `until ${fullFmt.format(new Date(until))}` : 'until it is lifted';
  }

  function banText(ban) {
    return `banned ${untilText(ban.until)}${ban.reason ? `: ${ban.reason}` : '.'}`;
  }

  /** A ban ends the session with no way back until it is over: the dialog
   *  says until when and why, and offers no Reconnect that cannot work. */
  function showBanned(ban) {
    $('kicked-title').textContent = 'This account is banned';
    $('kicked-text').textContent = `You are ${banText(ban)}`;
    const again = $('kicked-reconnect');
    again.hidden = true;
    clearTimeout(S.banTimer);
    if (typeof ban.until === 'number') {
      // setTimeout's longest wait is about 24.8 days.
      const wait = ban.until - Date.now() + 1000;
      if (wait < 2 ** 31) S.banTimer = setTimeout(() => { again.hidden = false; }, Math.max(0, wait));
    }
    const dlg = $('kicked-dialog');
    if (!dlg.open) dlg.showModal();
  }

  function activeMutes() {
    const now = Date.now();
    S.mutes = S.mutes.filter((m) => m.until == null || m.until > now);
    return S.mutes;
  }

  function onMuted(d) {
    if (!('room' in d)) return;
    S.mutes = S.mutes.filter((m) => m.room !== d.room);
    S.mutes.push({ room: d.room ?? null, until: d.until ?? null, reason: d.reason ?? null });
    renderMute();
  }

  function onUnmuted(d) {
    if (!('room' in d)) return;
    S.mutes = S.mutes.filter((m) => m.room !== (d.room ?? null));
    renderMute();
  }

  /** The mute that stops sending in the open conversation, if any: one
   *  for this room, or one everywhere (DMs included); the later-ending wins. */
  function muteHere() {
    if (!S.current) return null;
    const roomId = isDraft(S.current) ? null : S.current;
    const ends = (m) => (m.until == null ? Infinity : m.until);
    return activeMutes()
      .filter((m) => m.room == null || m.room === roomId)
      .sort((a, b) => ends(b) - ends(a))[0] || null;
  }

  /** Shown above the composer before anything is typed, and the composer
   *  is disabled while it lasts; it lifts itself when the mute ends. */
  function renderMute() {
    const m = muteHere();
    const note = $('mute-notice');
    clearTimeout(S.muteTimer);
    if (m) {
      const rs = m.room ? S.rooms.get(m.room) : null;
      const where = m.room ? `in ${rs ? `#${rs.room.name}` : 'this room'}` : 'everywhere';
      note.textContent = `You are muted ${where} ${untilText(m.until)}${m.reason ? `: ${m.reason}` : '.'} You can read, but not send.`;
      if (typeof m.until === 'number') {
        const wait = m.until - Date.now() + 250;
        if (wait < 2 ** 31) S.muteTimer = setTimeout(renderMute, Math.max(0, wait));
      }
    }
    note.hidden = !m;
    for (const id of ['input', 'send', 'attach']) $(id).disabled = !!m;
    if (!m) $('send').disabled = S.tray.some((t) => t.state === 'uploading');
  }

  // ------------------------------------------------------------ profiles

  /** The initials shown when a user has no picture. */
  function initials(name) {
    const parts = String(name || '?').split(/[._-]+/).filter(Boolean);
    const letters = parts.length > 1 ? parts[0][0] + parts[1][0] : String(name || '?').slice(0, 2);
    return letters.toUpperCase();
  }

  /** A user's picture, or their initials on a colour of their own. */
  function avatar(user, big) {
    const el = h('span', { class: `avatar${big ? ' big' : ''}`, 'aria-hidden': 'true' });
    let hue = 0;
    for (const c of String(user.username || '')) hue = (hue * 31 + c.charCodeAt(0)) % 360;
    el.style.setProperty('--hue', String(hue));
    const src = user.avatar_url ? safeUrl(user.avatar_url) : null;
    if (src) {
      const img = h('img', { src, alt: '', width: big ? 72 : 32, height: big ? 72 : 32, loading: 'lazy', decoding: 'async' });
      // A picture that cannot be fetched (removed by the operator) falls
      // back to the initials.
      img.addEventListener('error', () => { el.textContent = initials(user.username); }, { once: true });
      el.append(img);
    } else {
      el.textContent = initials(user.username);
    }
    return el;
  }

  /** One place for everything about a person: message them, friends and
   *  blocks, and, for staff who outrank them, moderation. `room` is the
   *  room the profile was opened from (a mute there), `moderate` jumps to
   *  the moderation form. */
  async function openProfile(username, opts = {}) {
    const dlg = $('profile-dialog');
    $('profile-name').textContent = username;
    $('profile-status').textContent = 'Loading…';
    $('profile-actions').replaceChildren();
    $('profile-error').textContent = '';
    $('moderate-form').hidden = true;
    $('profile-avatar').replaceWith(Object.assign(avatar({ username }, true), { id: 'profile-avatar' }));
    if (!dlg.open) dlg.showModal();
    let user;
    try {
      user = (await api('GET', `/api/users/${encodeURIComponent(username)}`)).user;
    } catch (e) {
      $('profile-status').textContent = e.code === 'not_found' ? `There is no user named ${username}.` : `Cannot load this profile: ${e.message || e.code}.`;
      return;
    }
    S.profile = { user, room: opts.room || null };
    renderProfile();
    friendsChanged(true);
    if (opts.moderate && !$('moderate-form').hidden) $('mod-reason').focus();
  }

  async function renderProfile() {
    const p = S.profile;
    if (!p) return;
    const { user } = p;
    const self = S.me && user.id === S.me.id;
    $('profile-avatar').replaceWith(Object.assign(avatar(user, true), { id: 'profile-avatar' }));
    const online = self || [...S.online.values()].some((u) => u.id === user.id);
    const role = user.role !== 'user' ? `${user.role} · ` : '';
    $('profile-status').textContent = `${role}${online ? 'online' : 'offline'}${self ? ' · you' : ''}`;
    const actions = [];
    if (!self) {
      actions.push(h('button', {
        type: 'button',
        class: 'primary',
        onclick: () => {
          for (const d of document.querySelectorAll('dialog[open]')) d.close();
          openDm(user.username);
        },
      }, `Message ${user.username}`));
    }
    actions.push(...profileSocialActions(user));
    $('profile-actions').replaceChildren(...actions);
    const form = $('moderate-form');
    form.hidden = self || !isStaff() || !outranks(user);
    if (!form.hidden) {
      const rs = p.room ? S.rooms.get(p.room) : null;
      const scopes = [];
      if (rs && rs.room.kind === 'room') scopes.push(h('option', { value: rs.room.id }, `In #${rs.room.name}`));
      scopes.push(h('option', { value: '' }, 'Everywhere'));
      $('mod-scope').replaceChildren(...scopes);
      $('mod-kick').textContent = `Kick ${user.username}`;
      $('mod-mute').textContent = `Mute ${user.username}`;
      $('mod-ban').textContent = `Ban ${user.username}`;
    }
  }


  function durationText(secs) {
    if (!secs) return 'until it is lifted';
    const opt = [...$('mod-duration').options].find((o) => o.value === String(secs));
    return `for ${opt ? opt.textContent.toLowerCase() : `${secs} seconds`}`;
  }

  const reasonText = (reason) => (reason ? ` Reason: “${reason}”.` : ' No reason given.');

  /** Every action on a user is confirmed, naming them, as the console does. */
  async function moderate(action) {
    const p = S.profile;
    if (!p) return;
    const name = p.user.username;
    const reason = $('mod-reason').value.trim();
    const secs = Number($('mod-duration').value) || 0;
    const scope = $('mod-scope').value;
    const scopeRoom = scope ? S.rooms.get(scope) : null;
    let text;
    let body = { username: name };
    if (reason) body.reason = reason;
    if (action === 'kick') {
      text = `Kick ${name}? Their open connections close now; they may come back at once.${reasonText(reason)}`;
    } else if (action === 'mute') {
      const where = scopeRoom ? `in #${scopeRoom.room.name}` : 'everywhere, DMs included';
      text = `Mute ${name} ${where} ${durationText(secs)}? They can read but not send.${reasonText(reason)}`;
      if (scope) body.room = scope;
      if (secs) body.duration_secs = secs;
    } else {
      text = `Ban ${name} ${durationText(secs)}? They are disconnected and cannot sign in until it ends.${reasonText(reason)}`;
      if (secs) body.duration_secs = secs;
    }
    const label = { kick: 'Kick', mute: 'Mute', ban: 'Ban' }[action];
    if (!(await confirmDialog(text, `${label} ${name}`))) return;
    try {
      await api('POST', `/api/moderation/${action}`, body);
      toast({ kick: `${name} is kicked.`, mute: `${name} is muted.`, ban: `${name} is banned.` }[action]);
      $('mod-reason').value = '';
    } catch (e) {
      $('profile-error').textContent = `Could not ${action} ${name}: ${e.message || e.code}.`;
    }
  }

  /** Someone else's message, deleted by staff: the confirmation names its
   *  author and shows its text, and the deletion goes to the audit log. */
  async function confirmModeratorDelete(m) {
    const who = m.sender ? m.sender.username : 'someone';
    const text = m.text ? ` “${m.text.length > 120 ? `${m.text.slice(0, 120)}…` : m.text}”` : ' (images only)';
    if (!(await confirmDialog(`Delete ${who}’s message${text}? Everyone will see that it was deleted.`, 'Delete'))) return;
    try {
      await api('DELETE', `/api/messages/${encodeURIComponent(m.id)}`);
    } catch (e) {
      toast(`Not deleted: ${e.message || e.code}`, 'bad');
    }
  }

  function openAnnounce() {
    const rs = currentRoom();
    const opts = [];
    if (rs && rs.room.kind === 'room') opts.push(h('option', { value: rs.room.id }, `Members of #${rs.room.name}`));
    opts.push(h('option', { value: '' }, 'Everyone on the server'));
    $('announce-scope').replaceChildren(...opts);
    $('announce-error').textContent = '';
    $('announce-dialog').showModal();
    $('announce-text').focus();
  }

  async function announce() {
    const text = $('announce-text').value.trim();
    const err = $('announce-error');
    if (!text) { err.textContent = 'Write the announcement first.'; return; }
    const scope = $('announce-scope').value;
    const rs = scope ? S.rooms.get(scope) : null;
    const to = rs ? `the members of #${rs.room.name}` : 'everyone on the server';
    const dlg = $('announce-dialog');
    dlg.close();
    if (!(await confirmDialog(`Announce to ${to}: “${text}”?`, 'Announce'))) { dlg.showModal(); return; }
    try {
      await api('POST', '/api/moderation/announce', scope ? { text, room: scope } : { text });
      $('announce-text').value = '';
    } catch (e) {
      dlg.showModal();
      err.textContent = `Not announced: ${e.message || e.code}.`;
    }
  }

  // --------------------------------------------------------- room settings

  const mayManage = (room) => !!S.me && (isStaff() || room.owner === S.me.id);
  const mayDelete = (room) => !!S.me && (S.me.role === 'admin' || room.owner === S.me.id);
  const mayAdd = (room) => room.visibility === 'public' || mayManage(room);
  const isOnline = (u) => (S.me && u.id === S.me.id) || S.online.has(u.id);

  /** Members (online first, each a way to their profile), adding members,
   *  name and topic, leaving and deleting, for the open room. */
  function openRoomDialog() {
    const rs = currentRoom();
    if (!rs || rs.room.kind !== 'room') return;
    const room = rs.room;
    S.roomDialog = room.id;
    $('room-dialog-title').textContent = `#${room.name}`;
    $('room-edit-form').hidden = !mayManage(room);
    $('room-edit-name').value = room.name;
    $('room-edit-topic').value = room.topic || '';
    $('add-member-form').hidden = !mayAdd(room);
    $('add-member-name').value = '';
    $('room-delete').hidden = !mayDelete(room);
    for (const id of ['room-edit-error', 'add-member-error', 'invite-error']) $(id).textContent = '';
    $('member-list').replaceChildren();
    $('invites-section').hidden = !mayAdd(room);
    $('invite-list').replaceChildren();
    $('room-dialog').showModal();
    loadMembers();
    if (mayAdd(room)) loadInvites();
  }

  // ------------------------------------------------------------- invites

  const inviteUrl = (inv) => new URL(inv.url, location.origin).href;

  async function loadInvites() {
    const id = S.roomDialog;
    if (!id) return;
    let r;
    try {
      r = await api('GET', `/api/rooms/${encodeURIComponent(id)}/invites`);
    } catch (e) {
      if (S.roomDialog === id) $('invite-error').textContent = `Cannot list the invite links: ${e.message || e.code}.`;
      return;
    }
    if (S.roomDialog !== id) return;
    renderInvites(Array.isArray(r.invites) ? r.invites : []);
  }

  function renderInvites(list) {
    const id = S.roomDialog;
    $('invite-list').replaceChildren(...list.map((inv) => {
      const limits = [
        inv.max_uses ? `${inv.uses}/${inv.max_uses} used` : `${inv.uses} used`,
        inv.expires_at ? `until ${fullFmt.format(new Date(inv.expires_at))}` : 'no expiry',
        inv.valid ? null : 'no longer valid',
      ].filter(Boolean).join(', ');
      return h('li', { class: 'invite', dataset: { code: inv.code } },
        h('code', {}, inviteUrl(inv)),
        h('span', { class: 'muted small' }, limits),
        h('button', { type: 'button', class: 'link invite-copy', onclick: () => copyInvite(inv) }, 'Copy'),
        h('button', { type: 'button', class: 'link danger invite-revoke', onclick: () => revokeInvite(id, inv) }, 'Revoke'));
    }));
  }

  async function createInvite() {
    const id = S.roomDialog;
    const err = $('invite-error');
    const body = {};
    const exp = $('invite-expiry').value;
    if (exp) body.expires_in_secs = Number(exp);
    const uses = $('invite-max-uses').value.trim();
    if (uses) {
      const n = Number(uses);
      if (!Number.isInteger(n) || n < 1 || n > 100000) { err.textContent = 'Uses: a whole number from 1 to 100000, or empty for any.'; return; }
      body.max_uses = n;
    }
    err.textContent = '';
    try {
      const r = await api('POST', `/api/rooms/${encodeURIComponent(id)}/invites`, body);
      if (r && r.invite) copyInvite(r.invite);
      loadInvites();
    } catch (e) {
      err.textContent = `No link made: ${e.message || e.code}.`;
    }
  }

  async function copyInvite(inv) {
    try {
      await navigator.clipboard.writeText(inviteUrl(inv));
      toast('The invite link is copied.');
    } catch {
      toast(`Invite link: ${inviteUrl(inv)}`);
    }
  }

  async function revokeInvite(roomId, inv) {
    try {
      await api('DELETE', `/api/rooms/${encodeURIComponent(roomId)}/invites/${encodeURIComponent(inv.code)}`);
      toast('The invite link is revoked.');
      loadInvites();
    } catch (e) {
      $('invite-error').textContent = `Not revoked: ${e.message || e.code}.`;
    }
  }

  /** The invite in the address (`/invite/CODE`), if one was opened. */
  function inviteInPath() {
    const m = /^\/invite\/([A-Za-z0-9_-]{1,64})$/.exec(location.pathname);
    return m ? m[1] : null;
  }

  /** Shows what the opened invite is to, on the sign-in page. */
  async function previewInvite(code) {
    const banner = $('invite-banner');
    try {
      const resp = await fetch(`/api/invites/${encodeURIComponent(code)}`);
      const body = await resp.json().catch(() => null);
      const inv = body && body.invite;
      if (!resp.ok || !inv) throw new Error('gone');
      banner.textContent = inv.valid
        ? `You are invited to #${inv.room_name}. Sign in or create an account to join.`
        : `This invite to #${inv.room_name} cannot be used: ${inv.reason || 'it is no longer valid'}.`;
    } catch {
      banner.textContent = 'This invite link is not valid.';
    }
    banner.hidden = false;
  }

  /** Signed in with an invite open: join its room, then forget the link. */
  async function acceptPendingInvite() {
    const code = S.invite;
    if (!code) return;
    S.invite = null;
    history.replaceState(null, '', '/');
    $('invite-banner').hidden = true;
    try {
      const r = await api('POST', `/api/invites/${encodeURIComponent(code)}/accept`);
      if (r && r.room) {
        addRoom(r.room, 0);
        selectRoom(r.room.id);
        toast(`You joined #${r.room.name}.`);
      }
    } catch (e) {
      toast(`Cannot join with this invite: ${e.message || e.code}`, 'bad');
    }
  }

  async function loadMembers() {
    const id = S.roomDialog;
    if (!id) return;
    const state = $('members-state');
    if (!$('member-list').children.length) state.textContent = 'Loading members…';
    let r;
    try {
      r = await api('GET', `/api/rooms/${encodeURIComponent(id)}`);
    } catch (e) {
      if (S.roomDialog === id) state.textContent = `Cannot list the members: ${e.message || e.code}.`;
      return;
    }
    if (S.roomDialog !== id) return;
    S.roomMembers = Array.isArray(r.members) ? r.members : [];
    renderMembers();
  }

  function renderMembers() {
    const id = S.roomDialog;
    const members = S.roomMembers.slice().sort((a, b) => (isOnline(b) - isOnline(a)) || a.username.localeCompare(b.username));
    const online = members.filter(isOnline).length;
    $('members-state').textContent = `${members.length} ${members.length === 1 ? 'member' : 'members'}, ${online} online`;
    $('member-list').replaceChildren(...members.map((u) => h('li', null, h('button', {
      type: 'button',
      class: 'member',
      'aria-label': `${u.username}${u.role !== 'user' ? `, ${u.role}` : ''}, ${isOnline(u) ? 'online' : 'offline'}: profile`,
      onclick: () => openProfile(u.username, { room: id }),
    }, avatar(u),
    h('span', { class: 'name' }, u.username, S.me && u.id === S.me.id ? ' (you)' : ''),
    u.role !== 'user' ? h('span', { class: 'role muted' }, u.role) : null,
    h('span', { class: `state muted${isOnline(u) ? ' on' : ''}` }, isOnline(u) ? 'online' : 'offline')))));
  }

  /** Someone came or went: lists of people that are open follow. */
  function peopleChanged() {
    if (S.roomDialog && $('room-dialog').open) renderMembers();
    if (S.profile && $('profile-dialog').open) renderProfile();
    friendsChanged(false);
  }

  async function saveRoom() {
    const rs = S.rooms.get(S.roomDialog);
    if (!rs) return;
    const err = $('room-edit-error');
    const name = $('room-edit-name').value.trim().toLowerCase();
    const topic = $('room-edit-topic').value.trim();
    if (!ROOM_NAME.test(name)) { err.textContent = 'Room names are 1–64 characters of a–z, 0–9, _ and -.'; return; }
    const body = {};
    if (name !== rs.room.name) body.name = name;
    if (topic !== (rs.room.topic || '')) body.topic = topic;
    if (!Object.keys(body).length) { err.textContent = 'Nothing has changed.'; return; }
    err.textContent = '';
    try {
      const r = await api('PATCH', `/api/rooms/${encodeURIComponent(rs.room.id)}`, body);
      if (r && r.room) onRoomUpdated(r.room);
      toast(`#${r.room.name} is saved.`);
    } catch (e) {
      err.textContent = e.code === 'conflict' ? `There is already a room named ${name}.` : `Not saved: ${e.message || e.code}.`;
    }
  }

  async function addMember() {
    const id = S.roomDialog;
    const err = $('add-member-error');
    const name = $('add-member-name').value.trim().toLowerCase();
    if (!USERNAME.test(name)) { err.textContent = 'Enter a username (3–32 of a–z, 0–9, _ . -).'; return; }
    err.textContent = '';
    try {
      await api('POST', `/api/rooms/${encodeURIComponent(id)}/members`, { username: name });
      // Only what was added is cleared: a name typed meanwhile stays.
      if ($('add-member-name').value.trim().toLowerCase() === name) $('add-member-name').value = '';
      toast(`${name} is a member now.`);
      loadMembers();
    } catch (e) {
      err.textContent = e.code === 'not_found' ? `There is no user named ${name}.` : `Cannot add ${name}: ${e.message || e.code}.`;
    }
  }

  async function leaveRoom(rs) {
    if (!(await confirmDialog(`Leave #${rs.room.name}? ${rs.room.visibility === 'private' ? 'It is private: someone must add you again to come back.' : 'You can join it again from the room list.'}`, 'Leave'))) return false;
    try {
      await request('leave_room', { room: rs.room.id });
      removeRoom(rs.room.id);
      return true;
    } catch (e) {
      toast(`Cannot leave: ${e.message || e.code}`, 'bad');
      return false;
    }
  }

  async function deleteRoom() {
    const rs = S.rooms.get(S.roomDialog);
    if (!rs) return;
    const n = S.roomMembers.length;
    if (!(await confirmDialog(`Delete #${rs.room.name} for its ${n} ${n === 1 ? 'member' : 'members'}, with its whole history? This cannot be undone.`, `Delete #${rs.room.name}`))) return;
    try {
      await api('DELETE', `/api/rooms/${encodeURIComponent(rs.room.id)}`);
      removeRoom(rs.room.id);
    } catch (e) {
      toast(`Not deleted: ${e.message || e.code}`, 'bad');
    }
  }

  function wireRooms() {
    $('room-info').addEventListener('click', openRoomDialog);
    $('room-dialog').addEventListener('close', () => { S.roomDialog = null; S.roomMembers = []; });
    $('room-edit-form').addEventListener('submit', (ev) => { ev.preventDefault(); saveRoom(); });
    $('add-member-form').addEventListener('submit', (ev) => { ev.preventDefault(); addMember(); });
    $('invite-form').addEventListener('submit', (ev) => { ev.preventDefault(); createInvite(); });
    $('room-leave').addEventListener('click', () => {
      const rs = S.rooms.get(S.roomDialog);
      if (rs) leaveRoom(rs);
    });
    $('room-delete').addEventListener('click', deleteRoom);
  }

  // ---------------------------------------------------- friends and blocks

  /** Loads friends, requests, blocks and the DM policy; null until then. */
  async function loadSocial() {
    const [friends, blocks, me] = await Promise.all([
      api('GET', '/api/friends'), api('GET', '/api/blocks'), api('GET', '/api/me'),
    ]);
    S.social = {
      friends: friends.friends || [],
      incoming: friends.incoming || [],
      outgoing: friends.outgoing || [],
      blocked: blocks.users || [],
      dmPolicy: me.dm_policy,
    };
    S.incoming = S.social.incoming.length;
    renderFriendsBadge();
    return S.social;
  }

  function renderFriendsBadge() {
    const b = $('friends-badge');
    b.hidden = !S.incoming;
    b.textContent = String(S.incoming || '');
    $('open-friends').setAttribute('aria-label', S.incoming ? `Friends, ${S.incoming} ${S.incoming === 1 ? 'request' : 'requests'}` : 'Friends');
  }

  function onFriendEvent(type, d) {
    if (type === 'friend_request' && d.user) toast(`${d.user.username} asks to be friends.`);
    if (type === 'friend_accepted' && d.user) toast(`You and ${d.user.username} are friends.`);
    renderFriendsBadge();
    friendsChanged(true);
  }

  /** Lists of people shown now follow a change; `reload` reads them again. */
  async function friendsChanged(reload) {
    const shown = $('friends-dialog').open || (S.profile && $('profile-dialog').open);
    if (!shown && !reload) return;
    if (reload || !S.social) {
      try { await loadSocial(); } catch { return; }
    }
    if ($('friends-dialog').open) renderFriends();
    if (S.profile && $('profile-dialog').open) renderProfile();
  }

  function personButton(u, extra) {
    return h('button', {
      type: 'button',
      class: 'member',
      'aria-label': `${u.username}${extra ? `, ${extra}` : ''}: profile`,
      onclick: () => openProfile(u.username),
    }, avatar(u), h('span', { class: 'name' }, u.username),
    extra ? h('span', { class: `state muted${extra === 'online' ? ' on' : ''}` }, extra) : null);
  }

  function renderFriends() {
    const so = S.social;
    if (!so) return;
    const none = (text) => h('li', { class: 'muted small' }, text);
    const row = (u, extra, ...buttons) => h('li', { class: 'friend-row' }, personButton(u, extra), ...buttons);
    const btn = (label, onclick, cls) => h('button', { type: 'button', class: cls || '', onclick }, label);
    $('incoming-list').replaceChildren(...(so.incoming.length ? so.incoming.map((u) => row(u, null,
      btn(`Accept ${u.username}`, () => social('friend_accept', { from: u.username }, `You and ${u.username} are friends.`), 'primary'),
      btn(`Decline ${u.username}`, () => social('friend_decline', { from: u.username })))) : [none('No requests.')]));
    $('outgoing-list').replaceChildren(...(so.outgoing.length ? so.outgoing.map((u) => row(u, 'waiting',
      btn(`Cancel request to ${u.username}`, () => social('friend_remove', { username: u.username })))) : [none('None waiting.')]));
    const friends = so.friends.slice().sort((a, b) => (isOnline(b.user) - isOnline(a.user)) || a.user.username.localeCompare(b.user.username));
    $('friend-list').replaceChildren(...(friends.length ? friends.map((f) => row(f.user, isOnline(f.user) ? 'online' : 'offline',
      btn(`Message ${f.user.username}`, () => {
        for (const d of document.querySelectorAll('dialog[open]')) d.close();
        openDm(f.user.username);
      }))) : [none('No friends yet: send a request above, or from a profile.')]));
    $('blocked-list').replaceChildren(...(so.blocked.length ? so.blocked.map((u) => row(u, null,
      btn(`Unblock ${u.username}`, () => social('unblock_user', { username: u.username }, `${u.username} is unblocked.`)))) : [none('Nobody.')]));
    for (const r of document.querySelectorAll('input[name="dm-policy"]')) r.checked = r.value === so.dmPolicy;
  }

  function socialError(e, name) {
    switch (e.code) {
      case 'not_found': return name ? `There is no user named ${name}, or nothing to undo.` : 'That is no longer there.';
      case 'conflict': return `${e.message || 'Already done'}.`;
      default: return `That did not work: ${e.message || e.code}.`;
    }
  }

  /** A friend or block frame; the lists are read again after it. */
  async function social(type, data, done) {
    const err = $('friends-dialog').open ? $('friends-error') : $('profile-error');
    err.textContent = '';
    try {
      await request(type, data);
      if (done) toast(done);
    } catch (e) {
      err.textContent = socialError(e, data.username || data.to || data.from);
    }
    await friendsChanged(true);
  }

  async function openFriends() {
    $('friends-error').textContent = '';
    $('dm-policy-state').textContent = '';
    $('friends-dialog').showModal();
    try {
      await loadSocial();
      renderFriends();
    } catch (e) {
      $('friends-error').textContent = `Cannot load your friends: ${e.message || e.code}.`;
    }
  }

  /** The profile's friend and block buttons, once the lists are known. */
  function profileSocialActions(user) {
    const so = S.social;
    if (!so || !S.me || user.id === S.me.id) return [];
    const name = user.username;
    const has = (list) => list.some((u) => u.id === user.id);
    const out = [];
    const btn = (label, onclick, cls) => h('button', { type: 'button', class: cls || '', onclick }, label);
    if (so.friends.some((f) => f.user.id === user.id)) {
      out.push(btn('Remove friend', async () => {
        if (await confirmDialog(`Remove ${name} from your friends?`, 'Remove')) social('friend_remove', { username: name });
      }));
    } else if (has(so.incoming)) {
      out.push(btn('Accept friend request', () => social('friend_accept', { from: name }, `You and ${name} are friends.`)));
      out.push(btn('Decline', () => social('friend_decline', { from: name })));
    } else if (has(so.outgoing)) {
      out.push(btn('Cancel friend request', () => social('friend_remove', { username: name })));
    } else if (!has(so.blocked)) {
      out.push(btn('Add friend', () => social('friend_request', { to: name }, `Friend request sent to ${name}.`)));
    }
    if (has(so.blocked)) {
      out.push(btn(`Unblock ${name}`, () => social('unblock_user', { username: name }, `${name} is unblocked.`)));
    } else {
      out.push(btn(`Block ${name}`, async () => {
        const ok = await confirmDialog(`Block ${name}? They cannot send you direct messages or see you online, and any friendship between you ends. They are not told.`, `Block ${name}`);
        if (ok) social('block_user', { username: name }, `${name} is blocked.`);
      }, 'danger'));
    }
    return out;
  }

  async function setDmPolicy(value) {
    const state = $('dm-policy-state');
    state.textContent = 'Saving…';
    try {
      const r = await api('PATCH', '/api/me', { dm_policy: value });
      if (S.social) S.social.dmPolicy = r.dm_policy;
      state.textContent = r.dm_policy === 'friends' ? 'Only friends may send you direct messages.' : 'Anyone may send you direct messages.';
    } catch (e) {
      state.textContent = `Not saved: ${e.message || e.code}.`;
      if (S.social) renderFriends();
    }
  }

  function wireFriends() {
    $('open-friends').addEventListener('click', openFriends);
    $('friend-add-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = $('friend-add-name').value.trim().toLowerCase();
      if (!USERNAME.test(name)) { $('friends-error').textContent = 'Enter a username (3–32 of a–z, 0–9, _ . -).'; return; }
      await social('friend_request', { to: name }, `Friend request sent to ${name}.`);
      if (!$('friends-error').textContent) $('friend-add-name').value = '';
    });
    for (const r of document.querySelectorAll('input[name="dm-policy"]')) {
      r.addEventListener('change', () => { if (r.checked) setDmPolicy(r.value); });
    }
  }

  // ------------------------------------------------------------- pictures

  /** A user's name, role or picture changed: every copy of them follows. */
  function onUserUpdated(user) {
    if (S.online.has(user.id)) S.online.set(user.id, user);
    if (S.me && user.id === S.me.id) {
      S.me = { ...S.me, ...user };
      if (!('avatar_url' in user)) delete S.me.avatar_url;
      storage.set(USER_KEY, JSON.stringify(S.me));
      if ($('account-dialog').open) renderAccountAvatar();
    }
    let shown = false;
    for (const rs of S.rooms.values()) {
      for (const m of rs.msgs) {
        if (m.sender && m.sender.id === user.id) {
          m.sender = user;
          if (rs === currentRoom()) shown = true;
        }
      }
    }
    if (shown) renderTimeline(false);
    if (S.roomDialog) {
      S.roomMembers = S.roomMembers.map((u) => (u.id === user.id ? user : u));
      if ($('room-dialog').open) renderMembers();
    }
    if (S.profile && S.profile.user.id === user.id) {
      S.profile.user = user;
      renderProfile();
    }
  }

  function renderAccountAvatar() {
    if (!S.me) return;
    $('account-avatar').replaceWith(Object.assign(avatar(S.me, true), { id: 'account-avatar' }));
    $('avatar-remove').hidden = !S.me.avatar_url;
  }

  /** Uploads a picture like any image (checked here first, cleaned by the
   *  server), then makes it the account's picture. */
  async function chooseAvatar(file) {
    const err = $('avatar-error');
    const problem = uploadProblem(file, true);
    if (problem) { err.textContent = problem; return; }
    err.textContent = 'Uploading…';
    try {
      const form = new FormData();
      form.append('file', file, file.name || 'picture');
      const up = await api('POST', '/api/uploads', form);
      const r = await api('POST', '/api/me/avatar', { upload: up.id });
      onUserUpdated(r.user);
      err.textContent = '';
    } catch (e) {
      err.textContent = e.code === 'too_large' || e.code === 'unsupported_media_type' ? uploadError(e) : `The picture was not set: ${e.message || e.code}.`;
    }
  }

  async function removeAvatar() {
    const err = $('avatar-error');
    try {
      const r = await api('DELETE', '/api/me/avatar');
      onUserUpdated(r.user);
      err.textContent = '';
    } catch (e) {
      err.textContent = `The picture was not removed: ${e.message || e.code}.`;
    }
  }

  function wirePictures() {
    $('avatar-choose').addEventListener('click', () => $('avatar-file').click());
    $('avatar-file').addEventListener('change', (ev) => {
      const file = ev.target.files[0];
      ev.target.value = '';
      if (file) chooseAvatar(file);
    });
    $('avatar-remove').addEventListener('click', removeAvatar);
    $('me-name').addEventListener('click', () => { $('avatar-error').textContent = ''; renderAccountAvatar(); });
  }

  function renderHeaderTools() {
    const rs = currentRoom();
    $('announce-open').hidden = !isStaff() || !S.current;
    $('room-info').hidden = !rs || rs.room.kind === 'dm';
    $('room-pins').hidden = !rs || isDraft(S.current);
  }

  function wireModeration() {
    $('mod-kick').addEventListener('click', () => moderate('kick'));
    $('mod-mute').addEventListener('click', () => moderate('mute'));
    $('mod-ban').addEventListener('click', () => moderate('ban'));
    $('profile-dialog').addEventListener('close', () => { S.profile = null; });
    $('announce-open').addEventListener('click', openAnnounce);
    $('announce-form').addEventListener('submit', (ev) => { ev.preventDefault(); announce(); });
  }

  // ---------------------------------------------------------- sign in/out

  function showLogin(message) {
    $('chat').hidden = true;
    $('login').hidden = false;
    $('login-error').textContent = message || '';
    $('login-username').focus();
  }

  async function authenticate(kind) {
    const username = $('login-username').value.trim().toLowerCase();
    const password = $('login-password').value;
    const err = $('login-error');
    if (!USERNAME.test(username)) {
      err.textContent = 'Usernames are 3–32 characters of a–z, 0–9, _ . and -.';
      return;
    }
    if (password.length < 8) {
      err.textContent = 'Passwords are at least 8 characters.';
      return;
    }
    err.textContent = kind === 'register' ? 'Creating your account…' : 'Signing in…';
    try {
      const resp = await fetch(`/api/auth/${kind}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(kind === 'register' && S.invite ? { username, password, invite: S.invite } : { username, password }),
      });
      const body = await resp.json().catch(() => null);
      if (!resp.ok || !body || !body.token) {
        const ban = body && body.error && body.error.ban;
        err.textContent = ban ? `This account is ${banText(ban)}`
          : (body && body.error && body.error.message) || `failed (${resp.status})`;
        return;
      }
      $('login-password').value = '';
      err.textContent = '';
      S.token = body.token;
      storage.set(TOKEN_KEY, body.token);
      storage.set(USER_KEY, JSON.stringify(body.user));
      // Registering with an invite already joined its room.
      if (kind === 'register' && body.room) {
        S.invite = null;
        history.replaceState(null, '', '/');
        $('invite-banner').hidden = true;
      }
      startChat(body.user);
    } catch {
      err.textContent = 'The server cannot be reached.';
    }
  }

  // The sign-in page's provider buttons, and no password form where the
  // server has passwords switched off.
  async function loadProviders() {
    try {
      const resp = await fetch('/api/auth/providers');
      if (!resp.ok) return;
      const body = await resp.json();
      const box = $('login-providers');
      box.replaceChildren(...(body.oidc || []).map((p) => {
        const a = document.createElement('a');
        a.className = 'button';
        a.href = p.start_url;
        a.textContent = `Sign in with ${p.label}`;
        return a;
      }));
      box.hidden = !(body.oidc || []).length;
      if (body.local_passwords === false) {
        for (const id of ['login-username', 'login-password', 'login-submit', 'register-submit']) {
          $(id).hidden = true;
          const label = document.querySelector(`label[for="${id}"]`);
          if (label) label.hidden = true;
        }
      }
    } catch { /* the password form stays */ }
  }

  async function finishProviderSignIn(token) {
    try {
      const resp = await fetch('/api/me', { headers: { authorization: `Bearer ${token}` } });
      const body = await resp.json().catch(() => null);
      if (!resp.ok || !body || !body.user) {
        showLogin((body && body.error && body.error.message) || 'Sign-in failed.');
        return;
      }
      S.token = token;
      storage.set(TOKEN_KEY, token);
      storage.set(USER_KEY, JSON.stringify(body.user));
      startChat(body.user);
    } catch {
      showLogin('The server cannot be reached.');
    }
  }

  function startChat(user) {
    S.me = user;
    S.signingOut = false;
    $('login').hidden = true;
    $('chat').hidden = false;
    if (user) {
      S.reads = storage.json(`confab.read.${user.id}`, {});
      $('me-name').textContent = user.username;
    }
    renderAll();
    connect();
    $('input').focus();
    acceptPendingInvite();
  }

  function signOut(message) {
    S.signingOut = true;
    clearTimeout(S.reconnectTimer);
    clearInterval(S.pingTimer);
    const ws = S.ws;
    S.ws = null;
    if (ws) ws.close(1000, 'signed out');
    storage.set(TOKEN_KEY, null);
    storage.set(USER_KEY, null);
    for (const d of document.querySelectorAll('dialog[open]')) d.close();
    Object.assign(S, {
      token: null, me: null, everConnected: false, attempt: 0, kicked: null, ban: null, mutes: [],
      current: null, outbox: [], editing: null, typingRoom: null, presence: [],
    });
    S.rooms.clear();
    S.online.clear();
    clearTray();
    setConn('offline');
    showLogin(message);
  }

  // -------------------------------------------------------------- account

  function openAccount() {
    $('password-form').reset();
    $('account-username').value = S.me ? S.me.username : '';
    $('password-error').textContent = '';
    $('everywhere-error').textContent = '';
    $('account-dialog').showModal();
    $('current-password').focus();
  }

  function accountError(e) {
    switch (e.code) {
      case 'forbidden': return 'The current password is wrong.';
      case 'rate_limited': return 'Too many attempts. Wait a minute, then try again.';
      case 'network': return 'The server cannot be reached. Try again when the connection is back.';
      case 'bad_request': return `That new password cannot be used: ${String(e.message || '').replace(/^new_password: /, '')}.`;
      default: return `That did not work (${e.message || e.code}).`;
    }
  }

  async function changePassword() {
    const err = $('password-error');
    const current = $('current-password').value;
    const next = $('new-password').value;
    if (!current) { err.textContent = 'Type your current password.'; return; }
    if (next.length < 8) { err.textContent = 'The new password must be at least 8 characters.'; return; }
    if (next === current) { err.textContent = 'The new password is the same as the current one.'; return; }
    err.textContent = 'Changing your password…';
    S.changingPassword = true;
    try {
      const body = await api('POST', '/api/me/password', { current_password: current, new_password: next });
      S.token = body.token;
      storage.set(TOKEN_KEY, body.token);
      if (body.user) {
        S.me = body.user;
        storage.set(USER_KEY, JSON.stringify(body.user));
      }
      $('account-dialog').close();
      toast('Your password is changed. Other devices are signed out.');
    } catch (e) {
      err.textContent = accountError(e);
    } finally {
      S.changingPassword = false;
      // The old connection may already be gone; come back with the token
      // there is now (a refused one signs out as usual).
      if (S.token && !S.ws) { S.attempt = 0; connect(); }
    }
  }

  /** "Sign out" ends the token on the server too, not only in this page:
   *  a copy of it left anywhere stops working. */
  function logOut() {
    const token = S.token;
    if (token) {
      fetch('/api/auth/logout', {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        keepalive: true,
      }).catch(() => {});
    }
    signOut();
  }

  async function logoutEverywhere() {
    const err = $('everywhere-error');
    err.textContent = '';
    // The server closes this page's connection too; that is expected here.
    S.signingOut = true;
    try {
      await api('POST', '/api/auth/logout', { everywhere: true });
    } catch (e) {
      S.signingOut = false;
      if (!S.token) return;
      err.textContent = accountError(e);
      if (!S.ws) { S.attempt = 0; connect(); }
      return;
    }
    signOut('You are signed out on every device.');
  }

  // --------------------------------------------------------------- wiring

  function autosize() {
    const ta = $('input');
    ta.style.height = 'auto';
    ta.style.height = `${Math.min(ta.scrollHeight, 200)}px`;
  }

  function editLastOwn() {
    const rs = currentRoom();
    if (!rs) return false;
    for (let i = rs.msgs.length - 1; i >= 0; i--) {
      const m = rs.msgs[i];
      if (m.sender.id === S.me.id && !m.deleted && m.text) {
        startEdit(m);
        return true;
      }
    }
    return false;
  }

  // Keeps exactly one message in the Tab order: the one last focused while
  // it is shown, otherwise the newest.
  function ensureRoving() {
    const list = $('messages');
    const items = list.querySelectorAll(':scope > li.msg');
    if (items.length === 0) return;
    const byId = S.rovingId ? [...items].find((li) => li.dataset.id === S.rovingId) : null;
    const cur = byId || items[items.length - 1];
    for (const li of list.querySelectorAll(':scope > li.msg[tabindex="0"]')) {
      if (li !== cur) li.tabIndex = -1;
    }
    cur.tabIndex = 0;
  }

  // ---------------------------------------------------------------- threads
  // A thread opens in a dialog: its root, its replies oldest first, and a
  // reply box with "also send to the room". Thread-only replies never enter
  // the room's timeline; the root shows its reply count and, for a thread
  // the user follows, how many replies are new (docs/protocol.md, section
  // "Replies and threads").

  const T = { root: null, replies: [], hasMore: false, following: false, unread: new Map() };

  function plural(n, one, many) {
    return `${n} ${n === 1 ? one : many}`;
  }

  // The line under a root (its replies) or a reply shown in the room.
  function threadLink(m) {
    if (m.reply_to) {
      return h('button', { type: 'button', class: 'link thread-link', tabindex: '-1', onclick: () => openThread(m.reply_to) }, 'replied in a thread');
    }
    const n = Number(m.reply_count) || 0;
    if (n === 0) return null;
    const st = T.unread.get(m.id);
    const fresh = st && st.following ? Number(st.unread) || 0 : 0;
    return h('button', { type: 'button', class: `link thread-link${fresh ? ' has-new' : ''}`, tabindex: '-1', onclick: () => openThread(m.id) },
      plural(n, 'reply', 'replies'), fresh ? ` · ${fresh} new` : null);
  }

  async function loadThreadUnread() {
    try {
      const d = await request('threads', {});
      T.unread.clear();
      for (const t of Array.isArray(d.threads) ? d.threads : []) {
        if (t && t.root) T.unread.set(t.root.id, { ...t, root: t.root.id, following: true });
      }
      const rs = currentRoom();
      for (const m of rs ? rs.msgs : []) {
        if (Number(m.reply_count) > 0) replaceMessageNode(rs, m);
      }
    } catch { /* an older server: no thread counts */ }
  }

  function onThreadUnread(d) {
    if (!d || !d.root) return;
    T.unread.set(d.root, d);
    const rs = S.rooms.get(d.room);
    const m = rs && rs.msgs.find((x) => x.id === d.root);
    if (m && rs === currentRoom()) replaceMessageNode(rs, m);
  }

  function renderThreadMessage(m, tag = 'li') {
    const li = h(tag, { class: `thread-msg${m.deleted ? ' deleted' : ''}`, dataset: { id: m.id, seq: String(m.seq) } },
      h('div', { class: 'msg-head' },
        h('span', { class: 'sender' }, m.sender ? m.sender.username : '?'),
        h('time', { class: 'muted', datetime: new Date(m.created_at).toISOString(), title: fullFmt.format(new Date(m.created_at)) }, when(m.created_at)),
        m.also_in_room ? h('span', { class: 'muted small' }, ' · also in the room') : null));
    if (m.deleted) li.append(h('p', { class: 'body muted' }, 'message deleted'));
    else if (m.text) li.append(h('p', { class: 'body' }, h('bdi', {}, richText(m.text))));
    if (!m.deleted && Array.isArray(m.attachments) && m.attachments.length) {
      li.append(h('div', { class: 'attachments' }, m.attachments.map(renderAttachment)));
    }
    return li;
  }

  function renderThread() {
    if (!T.root) return;
    $('thread-root').replaceChildren(renderThreadMessage(T.root, 'article'),
      h('p', { class: 'muted small' }, plural(Number(T.root.reply_count) || 0, 'reply', 'replies')));
    $('thread-replies').replaceChildren(...T.replies.map((m) => renderThreadMessage(m)));
    $('thread-more').hidden = !T.hasMore;
    const follow = $('thread-follow');
    follow.textContent = T.following ? 'Following' : 'Follow';
    follow.setAttribute('aria-pressed', String(T.following));
    $('thread-form').hidden = Boolean(T.root.deleted);
  }

  function addThreadReplies(msgs) {
    for (const m of msgs) {
      const i = T.replies.findIndex((x) => x.id === m.id);
      if (i >= 0) T.replies[i] = m;
      else T.replies.push(m);
    }
    T.replies.sort((a, b) => a.seq - b.seq);
  }

  async function openThread(id) {
    let page;
    try {
      page = await request('thread', { message_id: id, limit: 100 });
    } catch (e) {
      toast(`The thread cannot be opened: ${e.message || e.code}`, 'error');
      return;
    }
    T.root = page.root;
    T.replies = [];
    addThreadReplies(page.messages || []);
    T.hasMore = Boolean(page.has_more);
    T.following = Boolean(page.following);
    $('thread-error').textContent = '';
    renderThread();
    const dlg = $('thread-dialog');
    if (!dlg.open) dlg.showModal();
    $('thread-input').focus();
    markThreadRead();
  }

  async function moreThread() {
    if (!T.root) return;
    const last = T.replies[T.replies.length - 1];
    try {
      const page = await request('thread', { message_id: T.root.id, after: last ? last.seq : 0, limit: 100 });
      addThreadReplies(page.messages || []);
      T.hasMore = Boolean(page.has_more);
      renderThread();
      markThreadRead();
    } catch (e) {
      $('thread-error').textContent = e.message || 'the replies could not be loaded';
    }
  }

  function threadOpen() {
    return T.root && $('thread-dialog').open;
  }

  function markThreadRead() {
    if (!threadOpen() || !T.following) return;
    const last = T.replies[T.replies.length - 1];
    if (!last) return;
    const st = T.unread.get(T.root.id);
    if (st && st.last_read_seq >= last.seq) return;
    request('mark_thread_read', { message_id: T.root.id, seq: last.seq }).catch(() => {});
  }

  function onThreadReply(m) {
    if (!m.reply_to || !threadOpen() || m.reply_to !== T.root.id) return;
    // Replies beyond a page not loaded yet come with "Later replies".
    if (T.hasMore) return;
    addThreadReplies([m]);
    renderThread();
    markThreadRead();
  }

  function threadUpdated(m) {
    if (!T.root) return;
    if (m.id === T.root.id) T.root = m;
    else if (T.replies.some((x) => x.id === m.id)) addThreadReplies([m]);
    else return;
    if (threadOpen()) renderThread();
  }

  function threadDeleted(d) {
    if (!T.root) return;
    if (d.message_id === T.root.id) T.root = { ...T.root, text: '', attachments: [], deleted: true };
    const r = T.replies.find((x) => x.id === d.message_id);
    if (r) addThreadReplies([{ ...r, text: '', attachments: [], deleted: true }]);
    if (threadOpen()) renderThread();
  }

  async function sendThreadReply() {
    const input = $('thread-input');
    const text = input.value.trim();
    if (!text || !T.root) return;
    $('thread-error').textContent = '';
    try {
      const d = await request('send_message', {
        room: T.root.room,
        text,
        reply_to: T.root.id,
        also_in_room: $('thread-also').checked,
        client_msg_id: randomId(),
      });
      input.value = '';
      $('thread-also').checked = false;
      if (d.message) { addThreadReplies([d.message]); T.following = true; renderThread(); }
    } catch (e) {
      $('thread-error').textContent = e.message || 'the reply was not sent';
    }
  }

  function wireThreads() {
    $('thread-form').addEventListener('submit', (ev) => { ev.preventDefault(); sendThreadReply(); });
    $('thread-input').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        sendThreadReply();
      }
    });
    $('thread-more').addEventListener('click', moreThread);
    $('thread-follow').addEventListener('click', async () => {
      if (!T.root) return;
      const on = !T.following;
      try {
        await request(on ? 'follow_thread' : 'unfollow_thread', { message_id: T.root.id });
        T.following = on;
        renderThread();
      } catch (e) {
        $('thread-error').textContent = e.message || 'not changed';
      }
    });
  }

  function wireTimeline() {
    const list = $('messages');
    new MutationObserver(ensureRoving).observe(list, { childList: true });
    list.addEventListener('focusin', (ev) => {
      const li = ev.target.closest('#messages > li.msg');
      if (!li || !li.dataset.id) return;
      S.rovingId = li.dataset.id;
      ensureRoving();
    });
    list.addEventListener('keydown', (ev) => {
      const li = ev.target;
      // Keys typed in an open editor, or with a modifier, are not ours.
      if (!(li instanceof HTMLElement) || !li.matches('#messages > li.msg')) return;
      if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.isComposing) return;
      const items = [...list.querySelectorAll(':scope > li.msg')];
      const i = items.indexOf(li);
      const press = (sel) => {
        const el = li.querySelector(sel);
        if (el) el.click();
        return Boolean(el);
      };
      let to = null;
      let handled = true;
      switch (ev.key) {
        case 'ArrowUp': to = items[i - 1]; break;
        case 'ArrowDown': to = items[i + 1]; break;
        case 'Home': to = items[0]; break;
        case 'End': to = items[items.length - 1]; break;
        case 'Enter': handled = press('.msg-edit') || press('.thumb'); break;
        case 'e': case 'E': handled = press('.msg-edit'); break;
        case 'Delete': case 'd': case 'D': handled = press('.msg-delete'); break;
        case 'p': case 'P': handled = press('button.sender'); break;
        case 'm': case 'M': handled = press('.msg-moderate'); break;
        case 't': case 'T': handled = press('.msg-reply'); break;
        case 'r': case 'R': handled = press('.msg-react'); break;
        case 'i': case 'I': handled = press('.msg-pin'); break;
        default: handled = false;
      }
      if (!handled) return;
      ev.preventDefault();
      if (to) to.focus();
    });
  }

  // ------------------------------------------------------ reactions, pins

  const RECENT_KEY = 'confab.recentEmoji';
  const PALETTE = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀', '🔥', '✅', '👎', '🚀',
    '😀', '🤔', '👏', '💯', '🙌', '😍', '🤝', '⭐'];

  function recentEmoji() {
    const list = storage.json(RECENT_KEY, []);
    return Array.isArray(list) ? list.filter((e) => typeof e === 'string').slice(0, 12) : [];
  }

  function rememberEmoji(e) {
    storage.set(RECENT_KEY, JSON.stringify([e, ...recentEmoji().filter((x) => x !== e)].slice(0, 12)));
  }

  // The staff and the room's creator pin; in a DM both people do.
  function mayPin(rs) {
    if (!rs || !S.me) return false;
    return isStaff() || rs.room.kind === 'dm' || rs.room.owner === S.me.id;
  }

  function reactionTitle(r) {
    const names = Array.isArray(r.users) ? r.users.slice() : [];
    const others = Math.max(0, (r.count || 0) - names.length);
    if (others) names.push(`${others} other${others === 1 ? '' : 's'}`);
    return names.join(', ');
  }

  function renderReactions(m) {
    return h('div', { class: 'reactions', role: 'group', 'aria-label': 'Reactions' },
      m.reactions.map((r) => h('button', {
        type: 'button',
        class: `chip${r.me ? ' me' : ''}`,
        tabindex: '-1',
        title: reactionTitle(r),
        'aria-pressed': r.me ? 'true' : 'false',
        'aria-label': `${r.emoji} ${r.count}: ${reactionTitle(r)}`,
        onclick: () => toggleReaction(m, r.emoji),
      }, h('span', { class: 'chip-emoji' }, r.emoji), h('span', { class: 'chip-count' }, String(r.count)))));
  }

  async function toggleReaction(m, emoji) {
    const mine = (m.reactions || []).some((r) => r.emoji === emoji && r.me);
    try {
      await request(mine ? 'unreact' : 'react', { message_id: m.id, emoji });
      if (!mine) rememberEmoji(emoji);
    } catch (e) {
      toast(`Reaction not ${mine ? 'removed' : 'added'}: ${e.message || e.code}`, 'bad');
    }
  }

  // Broadcasts carry `me: false`: a client keeps its own from what it had
  // and from the events that name it.
  function keepMine(old, m) {
    if (!old || !Array.isArray(m.reactions)) return;
    for (const r of m.reactions) {
      const before = (old.reactions || []).find((x) => x.emoji === r.emoji);
      if (before && before.me) r.me = true;
    }
  }

  function findMessage(roomId, id) {
    const rs = S.rooms.get(roomId);
    if (!rs) return [null, null];
    return [rs, rs.msgs.find((x) => x.id === id) || null];
  }

  function onReaction(d, added) {
    const [rs, m] = findMessage(d.room, d.message_id);
    if (!m) return;
    const list = Array.isArray(m.reactions) ? m.reactions.map((r) => ({ ...r, users: [...(r.users || [])] })) : [];
    let r = list.find((x) => x.emoji === d.emoji);
    if (!r) {
      if (!added) return;
      r = { emoji: d.emoji, count: 0, me: false, users: [] };
      list.push(r);
    }
    r.count = Number(d.count) || 0;
    const name = d.user && d.user.username;
    const self = d.user && S.me && d.user.id === S.me.id;
    if (added) {
      if (self) r.me = true;
      if (name && !r.users.includes(name) && r.users.length < 3) r.users.push(name);
    } else {
      if (self) r.me = false;
      r.users = r.users.filter((u) => u !== name);
    }
    const next = { ...m, reactions: list.filter((x) => x.count > 0) };
    const i = rs.msgs.indexOf(m);
    rs.msgs[i] = next;
    if (rs === currentRoom()) replaceMessageNode(rs, next);
  }

  function onPinned(d, on) {
    const [rs, m] = findMessage(d.room, d.message_id);
    if (m) {
      const next = { ...m, pinned: on };
      rs.msgs[rs.msgs.indexOf(m)] = next;
      if (rs === currentRoom()) replaceMessageNode(rs, next);
    }
    if ($('pins-dialog').open && S.pinsRoom === d.room) loadPins();
  }

  async function togglePin(m) {
    try {
      await request(m.pinned ? 'unpin' : 'pin', { message_id: m.id });
    } catch (e) {
      toast(`Not ${m.pinned ? 'unpinned' : 'pinned'}: ${e.message || e.code}`, 'bad');
    }
  }

  function openPicker(m) {
    S.picking = m;
    const grid = (list) => list.map((e) => h('button', {
      type: 'button',
      class: 'emoji',
      'aria-label': e,
      onclick: () => pick(e),
    }, e));
    const recent = recentEmoji();
    $('react-recent').replaceChildren(...grid(recent));
    $('react-recent-label').hidden = recent.length === 0;
    $('react-palette').replaceChildren(...grid(PALETTE.filter((e) => !recent.includes(e))));
    $('react-error').textContent = '';
    $('react-input').value = '';
    const dlg = $('react-dialog');
    if (!dlg.open) dlg.showModal();
    const first = dlg.querySelector('button.emoji');
    if (first) first.focus();
  }

  async function pick(emoji) {
    const m = S.picking;
    const dlg = $('react-dialog');
    if (!m || !emoji) return;
    // The message as it is now, not as it was when the picker opened.
    const [, now] = findMessage(m.room, m.id);
    const mine = ((now || m).reactions || []).some((r) => r.emoji === emoji && r.me);
    try {
      await request(mine ? 'unreact' : 'react', { message_id: m.id, emoji });
      rememberEmoji(emoji);
      dlg.close();
      const li = $('messages').querySelector(`li[data-id="${CSS.escape(m.id)}"]`);
      if (li) li.focus({ preventScroll: true });
    } catch (e) {
      $('react-error').textContent = e.message || e.code;
    }
  }

  async function loadPins() {
    const room = S.pinsRoom;
    const list = $('pins-list');
    try {
      const page = await request('pins', { room });
      if (S.pinsRoom !== room) return;
      const msgs = page.messages || [];
      $('pins-state').textContent = msgs.length ? `${msgs.length} pinned` : 'Nothing is pinned here yet.';
      const rs = S.rooms.get(room);
      list.replaceChildren(...msgs.map((m) => h('li', { class: 'pin' },
        h('button', { type: 'button', class: 'search-hit', onclick: () => { $('pins-dialog').close(); jumpTo(m); } },
          h('span', { class: 'search-meta' },
            h('span', { class: 'sender' }, m.sender ? m.sender.username : '?'), ' · ',
            h('time', { datetime: new Date(m.created_at).toISOString() }, when(m.created_at))),
          h('span', { class: 'search-snippet' }, h('bdi', {}, m.text || (m.attachments && m.attachments.length ? '[attachment]' : '')))),
        mayPin(rs) ? h('button', { type: 'button', class: 'link pin-remove', onclick: () => togglePin(m) }, 'Unpin') : null)));
    } catch (e) {
      $('pins-state').textContent = `Could not load the pins: ${e.message || e.code}`;
    }
  }

  function openPins() {
    const rs = currentRoom();
    if (!rs) return;
    S.pinsRoom = rs.room.id;
    $('pins-list').replaceChildren();
    $('pins-state').textContent = 'Loading…';
    $('pins-dialog').showModal();
    loadPins();
  }

  function wireReactions() {
    $('room-pins').addEventListener('click', openPins);
    $('pins-dialog').addEventListener('close', () => { S.pinsRoom = null; });
    $('react-dialog').addEventListener('close', () => { S.picking = null; });
    $('react-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      pick($('react-input').value.trim());
    });
  }

  function wire() {
    wireReactions();
    wireTimeline();
    wireThreads();
    wireModeration();
    wireRooms();
    wireFriends();
    wirePictures();
    $('login-form').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const kind = ev.submitter && ev.submitter.value === 'register' ? 'register' : 'login';
      authenticate(kind);
    });

    $('composer').addEventListener('submit', (ev) => {
      ev.preventDefault();
      submitComposer();
    });
    const input = $('input');
    wireMentions(input);
    input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        submitComposer();
      } else if (ev.key === 'ArrowUp' && !input.value && editLastOwn()) {
        ev.preventDefault();
      }
    });
    input.addEventListener('input', () => {
      autosize();
      if (input.value.trim()) startTyping();
      else stopTyping();
    });
    input.addEventListener('paste', (ev) => {
      const files = [...(ev.clipboardData?.files || [])].filter((f) => f.type.startsWith('image/'));
      if (files.length) {
        ev.preventDefault();
        addFiles(files);
      }
    });
    $('attach').addEventListener('click', () => $('file').click());
    $('file').addEventListener('change', (ev) => {
      addFiles([...ev.target.files]);
      ev.target.value = '';
      input.focus();
    });
    const main = $('main');
    main.addEventListener('dragover', (ev) => {
      if ([...ev.dataTransfer.types].includes('Files')) {
        ev.preventDefault();
        main.classList.add('dropping');
      }
    });
    main.addEventListener('dragleave', () => main.classList.remove('dropping'));
    main.addEventListener('drop', (ev) => {
      main.classList.remove('dropping');
      if (ev.dataTransfer.files.length) {
        ev.preventDefault();
        addFiles([...ev.dataTransfer.files]);
      }
    });

    const tl = $('timeline');
    tl.addEventListener('scroll', () => {
      stickToBottom = atBottom();
      if (stickToBottom) {
        $('jump').hidden = true;
        maybeMarkRead();
      }
      checkLoadOlder();
    }, { passive: true });
    $('jump').addEventListener('click', () => { scrollToBottom(); maybeMarkRead(); input.focus(); });
    // Scroll events run before resize observers in a frame, so the flag
    // already says where the reader was before the size changed.
    const follow = new ResizeObserver(() => { if (stickToBottom) tl.scrollTop = tl.scrollHeight; });
    for (const el of [tl, $('messages'), $('pending')]) follow.observe(el);

    $('open-directory').addEventListener('click', openDirectory);
    $('empty-directory').addEventListener('click', openDirectory);
    $('open-dm').addEventListener('click', () => {
      $('dm-error').textContent = '';
      $('dm-username').value = '';
      $('dm-dialog').showModal();
    });
    $('dm-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const err = $('dm-error');
      const name = $('dm-username').value.trim().toLowerCase();
      if (!USERNAME.test(name)) {
        err.textContent = 'Enter a username (3–32 of a–z, 0–9, _ . -).';
        return;
      }
      // The name is checked before a conversation opens: otherwise a typo
      // opens an empty conversation that fails only on the first send.
      if (!findDm(name)) {
        const submit = $('dm-form').querySelector('button[type="submit"]');
        if (submit) submit.disabled = true;
        err.textContent = '';
        try {
          await api('GET', `/api/users/${encodeURIComponent(name)}`);
        } catch (e) {
          err.textContent = e.code === 'not_found'
            ? `There is no user named ${name}.`
            : `Could not check that name: ${e.message}.`;
          return;
        } finally {
          if (submit) submit.disabled = false;
        }
      }
      $('dm-dialog').close();
      openDm(name);
    });
    $('create-room-form').addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = $('new-room-name').value.trim().toLowerCase();
      const topic = $('new-room-topic').value.trim();
      const err = $('create-room-error');
      if (!ROOM_NAME.test(name)) {
        err.textContent = 'Room names are 1–64 characters of a–z, 0–9, _ and -.';
        return;
      }
      err.textContent = '';
      const data = { name, visibility: $('new-room-private').checked ? 'private' : 'public' };
      if (topic) data.topic = topic;
      try {
        const r = await request('create_room', data);
        addRoom(r.room, 0);
        $('directory-dialog').close();
        $('new-room-name').value = '';
        $('new-room-topic').value = '';
        $('new-room-private').checked = false;
        selectRoom(r.room.id);
      } catch (e) {
        err.textContent = e.message || e.code;
      }
    });

    $('leave-room').addEventListener('click', () => {
      const rs = currentRoom();
      if (rs) leaveRoom(rs);
    });

    $('banner-close').addEventListener('click', () => { $('banner').hidden = true; });
    $('logout').addEventListener('click', () => logOut());
    $('me-name').addEventListener('click', openAccount);
    $('password-form').addEventListener('submit', (ev) => { ev.preventDefault(); changePassword(); });
    $('logout-everywhere').addEventListener('click', logoutEverywhere);
    $('kicked-logout').addEventListener('click', () => signOut());
    $('kicked-reconnect').addEventListener('click', () => {
      $('kicked-dialog').close();
      S.kicked = null;
      S.attempt = 0;
      connect();
    });
    // An alert dialog: after a kick the user chooses between reconnecting
    // and signing out, and Esc would leave them offline with neither.
    $('kicked-dialog').addEventListener('cancel', (ev) => ev.preventDefault());
    $('image-dialog').addEventListener('click', (ev) => {
      if (ev.target === $('image-dialog') || ev.target === $('image-full')) $('image-dialog').close();
    });
    $('image-dialog').addEventListener('close', () => $('image-full').removeAttribute('src'));

    const closeNav = () => {
      document.body.classList.remove('nav-open');
      $('menu').setAttribute('aria-expanded', 'false');
      $('scrim').hidden = true;
    };
    $('menu').addEventListener('click', () => {
      const open = !document.body.classList.contains('nav-open');
      document.body.classList.toggle('nav-open', open);
      $('menu').setAttribute('aria-expanded', String(open));
      $('scrim').hidden = !open;
      if (open) $('sidebar').querySelector('button.conv, button')?.focus();
    });
    $('scrim').addEventListener('click', closeNav);
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && document.body.classList.contains('nav-open')) {
        closeNav();
        $('menu').focus();
      }
    });

    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState !== 'visible') return;
      if (S.token && !S.ws && !$('kicked-dialog').open) { S.attempt = 0; connect(); }
      maybeMarkRead();
    });
    window.addEventListener('focus', maybeMarkRead);
    window.addEventListener('online', () => {
      if (S.token && !S.ws && !$('kicked-dialog').open) { S.attempt = 0; connect(); }
    });
  }

  function openDirectory() {
    $('create-room-error').textContent = '';
    $('directory-dialog').showModal();
    loadDirectory();
  }

  function boot() {
    // What notify.js (notifications, their settings) uses of this client.
    window.confab = {
      api,
      send,
      currentRoom: () => (S.current && !isDraft(S.current) ? currentRoom()?.room || null : null),
      openRoom: (id) => { if (S.rooms.has(id)) selectRoom(id); },
      roomName: (room) => `${room.kind === 'dm' ? '@' : '#'}${roomLabel(room)}`,
      // A room's notification setting changed: its badge follows.
      setRoomNotify: (setting) => {
        if (quietSetting(setting)) S.quiet.add(setting.room);
        else S.quiet.delete(setting.room);
        renderSidebar();
      },
    };
    wire();
    wireSearch();
    setConn('offline');
    S.invite = inviteInPath();
    if (S.invite) previewInvite(S.invite);
    loadProviders();
    // Back from an OpenID provider: the token (or why not) is in the
    // fragment, which no server saw; it leaves the address bar at once.
    const back = new URLSearchParams(location.hash.slice(1));
    if (back.has('oidc_token') || back.has('oidc_error')) {
      history.replaceState(null, '', location.pathname + location.search);
      if (back.has('oidc_token')) {
        finishProviderSignIn(back.get('oidc_token'));
        return;
      }
      S.token = null;
      showLogin(back.get('oidc_error'));
      return;
    }
    S.token = storage.get(TOKEN_KEY);
    const user = storage.json(USER_KEY, null);
    if (S.token && user && typeof user.id === 'string') startChat(user);
    else {
      S.token = null;
      showLogin();
    }
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();

// The Node.js Socket.IO peer for `bash bench/compare.sh` (SOCKETIO=1): the
// official `socket.io` server speaking confab's frames as events, the way
// confab's /socket.io/ does (docs/socketio.md), so `confab bench --socketio`
// drives both alike. HTTP is the node-ws peer's (register, login, rooms);
// messages are kept in memory only (no disk: it does less work than
// confab, so ratios against it are conservative).
//
//   node server.js [--port 8091] [--host 127.0.0.1] [--bcrypt-cost 10]
//
// Socket.IO: CONNECT with auth {token}; events join_room, leave_room,
// send_message, typing_start/stop, ping, each answered by the ack
// {ok: true, data} / {ok: false, error: {code, message}}; server events
// authenticated, message, typing.
'use strict';
const http = require('http');
const crypto = require('crypto');
const { Server } = require('socket.io');
const jwt = require('jsonwebtoken');
const bcrypt = require('bcryptjs');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 && args[i + 1] ? args[i + 1] : dflt;
};
const PORT = Number(opt('--port', process.env.PORT || 8091));
const HOST = opt('--host', '127.0.0.1');
const SECRET = crypto.randomBytes(32).toString('hex');
const BCRYPT_COST = Number(opt('--bcrypt-cost', 10));

const usersByName = new Map(); // name -> {id, username, role, hash}
const usersById = new Map();
const rooms = new Map(); // id -> {room, members:Set<userId>, messages:[]}
const roomsByName = new Map();
const idempotency = new Map(); // userId|client_msg_id -> message

const newId = () => crypto.randomBytes(12).toString('hex');
const now = () => Date.now();
const publicUser = (u) => ({ id: u.id, username: u.username, role: u.role });

function sendJson(res, status, body) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(data);
}
const httpError = (res, status, code, message) =>
  sendJson(res, status, { error: { code, message } });

function readBody(req) {
  return new Promise((resolve, reject) => {
    let size = 0;
    const chunks = [];
    req.on('data', (c) => {
      size += c.length;
      if (size > 1 << 20) { reject(new Error('too_large')); req.destroy(); return; }
      chunks.push(c);
    });
    req.on('end', () => {
      try { resolve(chunks.length ? JSON.parse(Buffer.concat(chunks)) : {}); }
      catch (e) { reject(new Error('bad_json')); }
    });
    req.on('error', reject);
  });
}

function authUser(token) {
  try {
    const claims = jwt.verify(token, SECRET, { algorithms: ['HS256'] });
    return usersById.get(claims.sub) || null;
  } catch (e) { return null; }
}
const tokenFor = (u) => jwt.sign({ sub: u.id }, SECRET, { algorithm: 'HS256', expiresIn: '7d' });
const bearer = (req) => {
  const h = req.headers.authorization || '';
  return h.startsWith('Bearer ') ? authUser(h.slice(7)) : null;
};

function createRoom(owner, name, visibility, topic) {
  const room = { id: newId(), name, kind: 'room', visibility: visibility || 'public',
    topic: topic || '', owner: owner.id, created_at: now() };
  const entry = { room, members: new Set([owner.id]), messages: [] };
  rooms.set(room.id, entry);
  roomsByName.set(name, entry);
  return entry;
}

function history(entry, q) {
  const limit = Math.min(Math.max(Number(q.limit) || 50, 1), 200);
  let msgs = entry.messages;
  if (q.after !== undefined && q.after !== null) {
    const after = Number(q.after);
    msgs = msgs.filter((m) => m.seq > after);
    const page = msgs.slice(0, limit);
    return { messages: page, has_more: msgs.length > limit };
  }
  if (q.before !== undefined && q.before !== null) {
    const before = Number(q.before);
    msgs = msgs.filter((m) => m.seq < before);
  }
  const page = msgs.slice(Math.max(0, msgs.length - limit));
  return { messages: page, has_more: msgs.length > limit };
}

async function handleHttp(req, res) {
  const url = new URL(req.url, 'http://x');
  const path = url.pathname;
  try {
    if (req.method === 'GET' && path === '/healthz') return sendJson(res, 200, { status: 'ok' });
    if (req.method === 'POST' && (path === '/api/auth/register' || path === '/api/auth/login')) {
      const body = await readBody(req);
      const username = String(body.username || '').toLowerCase();
      const password = String(body.password || '');
      if (!/^[a-z0-9_.-]{3,32}$/.test(username) || password.length < 8)
        return httpError(res, 400, 'bad_request', 'invalid username or password');
      if (path.endsWith('register')) {
        if (usersByName.has(username)) return httpError(res, 409, 'conflict', 'username taken');
        const u = { id: newId(), username, role: 'user', hash: await bcrypt.hash(password, BCRYPT_COST) };
        usersByName.set(username, u);
        usersById.set(u.id, u);
        return sendJson(res, 201, { token: tokenFor(u), user: publicUser(u) });
      }
      const u = usersByName.get(username);
      if (!u || !(await bcrypt.compare(password, u.hash)))
        return httpError(res, 401, 'unauthorized', 'wrong username or password');
      return sendJson(res, 200, { token: tokenFor(u), user: publicUser(u) });
    }
    const user = bearer(req);
    if (!user) return httpError(res, 401, 'unauthorized', 'missing or bad token');
    if (req.method === 'POST' && path === '/api/rooms') {
      const body = await readBody(req);
      const name = String(body.name || '');
      if (!/^[a-z0-9_-]{1,64}$/.test(name)) return httpError(res, 400, 'bad_request', 'invalid room name');
      if (roomsByName.has(name)) return httpError(res, 409, 'conflict', 'room exists');
      return sendJson(res, 201, { room: createRoom(user, name, body.visibility, body.topic).room });
    }
    if (req.method === 'GET' && path === '/api/rooms') {
      const list = [...rooms.values()]
        .filter((e) => e.room.visibility === 'public' || e.members.has(user.id))
        .map((e) => e.room);
      return sendJson(res, 200, { rooms: list });
    }
    const m = path.match(/^\/api\/rooms\/([^/]+)\/messages$/);
    if (req.method === 'GET' && m) {
      const entry = rooms.get(m[1]);
      if (!entry) return httpError(res, 404, 'not_found', 'no such room');
      if (entry.room.visibility !== 'public' && !entry.members.has(user.id))
        return httpError(res, 403, 'forbidden', 'not a member');
      return sendJson(res, 200, history(entry, Object.fromEntries(url.searchParams)));
    }
    return httpError(res, 404, 'not_found', 'no such endpoint');
  } catch (e) {
    if (e.message === 'bad_json') return httpError(res, 400, 'bad_request', 'malformed JSON');
    if (e.message === 'too_large') return httpError(res, 413, 'too_large', 'body too large');
    return httpError(res, 500, 'internal', 'internal error');
  }
}


const server = http.createServer(handleHttp);
// confab's defaults: heartbeat 25 s / 20 s, messages up to 64 KiB.
const io = new Server(server, { pingInterval: 25000, pingTimeout: 20000, maxHttpBufferSize: 64 * 1024 });

io.use((socket, next) => {
  const u = authUser(String((socket.handshake.auth && socket.handshake.auth.token) || ''));
  if (!u) {
    const err = new Error('unauthorized');
    err.data = { code: 'unauthorized', message: 'bad token' };
    return next(err);
  }
  socket.data.user = u;
  next();
});

const ok = (ack, data) => { if (typeof ack === 'function') ack({ ok: true, data }); };
const fail = (socket, ack, code, message) => {
  if (typeof ack === 'function') ack({ ok: false, error: { code, message } });
  else socket.emit('error', { code, message });
};

io.on('connection', (socket) => {
  const user = socket.data.user;
  const mine = [];
  for (const e of rooms.values()) if (e.members.has(user.id)) { socket.join(e.room.id); mine.push(e.room); }
  socket.emit('authenticated', { user: publicUser(user), session_id: socket.id, rooms: mine, online_users: [] });
  const roomOf = (d) => (d && d.room !== undefined ? rooms.get(String(d.room)) : undefined);

  socket.on('ping', (d, ack) => ok(ack, {}));
  socket.on('join_room', (d, ack) => {
    const entry = roomOf(d);
    if (!entry) return fail(socket, ack, 'not_found', 'no such room');
    if (entry.room.visibility !== 'public' && !entry.members.has(user.id))
      return fail(socket, ack, 'forbidden', 'private room');
    entry.members.add(user.id);
    socket.join(entry.room.id);
    const last = entry.messages.length ? entry.messages[entry.messages.length - 1].seq : 0;
    ok(ack, { room: entry.room, last_seq: last });
  });
  socket.on('leave_room', (d, ack) => {
    const entry = roomOf(d);
    if (!entry) return fail(socket, ack, 'not_found', 'no such room');
    entry.members.delete(user.id);
    socket.leave(entry.room.id);
    ok(ack, {});
  });
  socket.on('send_message', (d, ack) => {
    const entry = roomOf(d);
    if (!entry) return fail(socket, ack, 'not_found', 'no such room');
    if (!entry.members.has(user.id)) return fail(socket, ack, 'forbidden', 'not a member');
    const text = d.text;
    if (typeof text !== 'string' || text.length === 0 || text.length > 4000)
      return fail(socket, ack, 'bad_request', 'text must be 1-4000 characters');
    const key = d.client_msg_id ? user.id + '|' + d.client_msg_id : null;
    if (key && idempotency.has(key)) return ok(ack, { message: idempotency.get(key) });
    const message = { id: newId(), room: entry.room.id, seq: entry.messages.length + 1,
      sender: publicUser(user), text, attachments: [], created_at: now(), edited_at: null,
      deleted: false, client_msg_id: d.client_msg_id || null };
    entry.messages.push(message);
    if (key) idempotency.set(key, message);
    io.to(entry.room.id).emit('message', { message });
    ok(ack, { message });
  });
  for (const type of ['typing_start', 'typing_stop']) {
    socket.on(type, (d, ack) => {
      const entry = roomOf(d);
      if (!entry) return fail(socket, ack, 'not_found', 'no such room');
      socket.to(entry.room.id).emit('typing', { room: entry.room.id, user: publicUser(user), typing: type === 'typing_start' });
      ok(ack, {});
    });
  }
});

server.listen(PORT, HOST, () => {
  console.log(`node-socketio peer listening on http://${HOST}:${PORT}`);
});
const stop = () => { io.close(() => process.exit(0)); setTimeout(() => process.exit(0), 2000).unref(); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

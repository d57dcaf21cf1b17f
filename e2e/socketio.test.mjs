// /socket.io/ judged by the official client: socket.io-client (Node) against
// the debug binary, with /ws clients (the `ws` package) in the same rooms.
// Both transports alone and with the upgrade, acknowledgements, errors,
// namespaces, the replaced servers' event names, reconnection and
// connection state recovery, across a server restart too.
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { io } from 'socket.io-client';
import WebSocket from 'ws';
import {
  CHROMIUM, HERE, PASSWORD, SERVER_ENV, ctx, http as request, sleep, startServer as start, stopServer as stop,
} from './harness.mjs';

// Shorter than the browser tests' patience: these exchanges are quick.
const WAIT = 10_000;

/** The server's settings: startPages adds the front-end's origin. */
// Recovery is opt-in, as in Socket.IO's own server.
const ENV = { ...SERVER_ENV, CONFAB_SOCKETIO_RECOVERY: 'true' };

let server;
let base;
let pages;
let pagesOrigin;

/** A front-end on another origin, as a Socket.IO app's would be: a page
 * that loads the official browser bundle from the npm package. */
const PAGE = `<!doctype html><meta charset="utf-8"><title>socket.io front-end</title>
<script src="/socket.io.min.js"></script>
<script>
  const q = new URLSearchParams(location.search);
  window.texts = [];
  const socket = io(q.get('server'), { auth: { token: q.get('token') } });
  window.socket = socket;
  socket.on('message', (m) => window.texts.push(m.message.sender.username + ': ' + m.message.text));
</script>`;

async function startPages() {
  const bundle = await readFile(path.join(HERE, 'node_modules/socket.io-client/dist/socket.io.min.js'));
  pages = createServer((req, res) => {
    if (req.url.startsWith('/socket.io.min.js')) {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(bundle);
    } else {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    }
  });
  await new Promise((r) => pages.listen(0, '127.0.0.1', r));
  pagesOrigin = `http://127.0.0.1:${pages.address().port}`;
  ENV.CONFAB_SERVER_CORS_ORIGINS = pagesOrigin;
}

const startServer = (bind) => start(bind, ENV);
const stopServer = (s) => stop(s, 'SIGTERM');

/** Waits until `check()` is truthy, polling, with a deadline. */
async function until(check, what) {
  const deadline = Date.now() + WAIT;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

const http = (method, urlPath, token, body) => request(base, method, urlPath, token, body);

let n = 0;
async function user(prefix) {
  n += 1;
  const name = `${prefix}${n}`;
  const r = await http('POST', '/api/auth/register', '', { username: name, password: PASSWORD });
  return { name, token: r.token, id: r.user.id };
}

async function room(owner) {
  n += 1;
  const r = await http('POST', '/api/rooms', owner.token, { name: `room${n}` });
  return r.room.id;
}

/** A /ws client that keeps every event it is sent. */
async function wsClient(u) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws?token=${u.token}`);
  const events = [];
  ws.on('message', (b) => events.push(JSON.parse(b.toString())));
  await new Promise((res, rej) => { ws.once('open', res); ws.once('error', rej); });
  let id = 0;
  const send = async (type, data) => {
    id += 1;
    const cid = `c${id}`;
    ws.send(JSON.stringify({ type, id: cid, data }));
    const answer = await until(() => events.find((e) => e.id === cid), `${type} answer`);
    assert.equal(answer.type, 'ack', JSON.stringify(answer));
    return answer.data;
  };
  return { ws, events, send, close: () => ws.close() };
}

/** A socket.io-client socket that keeps every event it is sent. */
function sioClient(u, opts = {}) {
  const socket = io(base, { auth: { token: u.token }, reconnectionDelay: 100, reconnectionDelayMax: 200, ...opts });
  const events = [];
  socket.onAny((name, ...args) => events.push({ name, args }));
  return { socket, events };
}

function connected(socket) {
  return new Promise((res, rej) => {
    socket.once('connect', res);
    socket.once('connect_error', rej);
  });
}

const messagesOf = (events) => events.filter((e) => e.name === 'message').map((e) => e.args[0].message);

before(async () => {
  await startPages();
  ctx.dataDir = await mkdtemp(path.join(os.tmpdir(), 'confab-sio-'));
  server = await startServer('127.0.0.1:0');
  base = server.url;
});

after(async () => {
  if (server) await stopServer(server);
  pages?.close();
  await rm(ctx.dataDir, { recursive: true, force: true });
});

describe('socket.io-client against /socket.io/', () => {
  for (const transports of [['websocket'], ['polling']]) {
    it(`chats over ${transports[0]} alone: events, acks, the same seqs as /ws`, async () => {
      const alice = await user('alice');
      const bob = await user('bob');
      const r = await room(alice);
      const { socket, events } = sioClient(alice, { transports });
      await connected(socket);
      assert.equal(socket.io.engine.transport.name, transports[0]);
      const hello = await until(() => events.find((e) => e.name === 'authenticated'), 'authenticated');
      assert.equal(hello.args[0].user.username, alice.name);
      const bobWs = await wsClient(bob);
      await bobWs.send('join_room', { room: r });
      const joined = await socket.emitWithAck('join_room', { room: r });
      assert.equal(joined.ok, true);
      assert.equal(joined.data.room.id, r);
      const sent = await socket.emitWithAck('send_message', { room: r, text: 'hello from socket.io' });
      assert.equal(sent.ok, true);
      await bobWs.send('send_message', { room: r, text: 'hello from /ws' });
      const theirs = await until(() => {
        const m = bobWs.events.filter((e) => e.type === 'message').map((e) => e.data.message);
        return m.length === 2 && m;
      }, 'both messages on /ws');
      const ours = await until(() => {
        const m = messagesOf(events);
        return m.length === 2 && m;
      }, 'both messages on socket.io');
      assert.deepEqual(ours.map((m) => [m.seq, m.text, m.sender.username]), theirs.map((m) => [m.seq, m.text, m.sender.username]));
      assert.deepEqual(ours.map((m) => m.seq), [1, 2]);
      assert.equal(sent.data.message.seq, 1);
      socket.disconnect();
      bobWs.close();
    });
  }

  it('upgrades from polling to websocket and keeps chatting', async () => {
    const alice = await user('alice');
    const r = await room(alice);
    const { socket, events } = sioClient(alice);
    let first;
    let upgraded;
    socket.io.once('open', () => {
      first = socket.io.engine.transport.name;
      socket.io.engine.once('upgrade', (t) => { upgraded = t.name; });
    });
    await connected(socket);
    assert.equal(first, 'polling');
    await until(() => upgraded, 'the upgrade');
    assert.equal(upgraded, 'websocket');
    assert.equal(socket.io.engine.transport.name, 'websocket');
    const sent = await socket.emitWithAck('send_message', { room: r, text: 'after the upgrade' });
    assert.equal(sent.ok, true);
    await until(() => messagesOf(events).length === 1, 'the message');
    socket.disconnect();
  });

  it('answers failures with {ok:false, error:{code, message}} and refuses bad sign-ins', async () => {
    const alice = await user('alice');
    const { socket, events } = sioClient(alice, { transports: ['websocket'] });
    await connected(socket);
    const unknown = await socket.emitWithAck('no_such_event', {});
    assert.deepEqual(Object.keys(unknown).sort(), ['error', 'ok']);
    assert.equal(unknown.ok, false);
    assert.equal(unknown.error.code, 'bad_request');
    const missing = await socket.emitWithAck('join_room', { room: '01JZZZZZZZZZZZZZZZZZZZZZZZ' });
    assert.equal(missing.ok, false);
    assert.equal(missing.error.code, 'not_found');
    assert.ok(missing.error.message);
    // Without an ack the failure comes back as an `error` event.
    socket.emit('join_room', {});
    const err = await until(() => events.find((e) => e.name === 'error'), 'the error event');
    assert.equal(err.args[0].code, 'bad_request');
    socket.disconnect();

    const bad = io(base, { auth: { token: 'nope' }, transports: ['websocket'], reconnection: false });
    const refusal = await new Promise((res) => bad.once('connect_error', res));
    assert.equal(refusal.data.code, 'unauthorized');
    bad.close();
    const none = io(base, { transports: ['polling'], reconnection: false });
    const refusal2 = await new Promise((res) => none.once('connect_error', res));
    assert.equal(refusal2.data.code, 'unauthorized');
    none.close();
  });

  it('serves the main namespace only: another is refused as Invalid namespace', async () => {
    const alice = await user('alice');
    const main = io(base, { auth: { token: alice.token }, transports: ['websocket'] });
    await connected(main);
    const admin = io(`${base}/admin`, { auth: { token: alice.token }, transports: ['websocket'], reconnection: false });
    const refusal = await new Promise((res) => admin.once('connect_error', res));
    assert.equal(refusal.message, 'Invalid namespace');
    // The main namespace is not disturbed (they share one connection).
    const pong = await main.emitWithAck('ping', {});
    assert.equal(pong.ok, true);
    admin.close();
    main.disconnect();
  });

  it('speaks the replaced servers\' events; the sender is always the signed-in user', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const r = await room(bob);
    const bobWs = await wsClient(bob);
    await bobWs.send('join_room', { room: r });
    const { socket, events } = sioClient(alice, { transports: ['websocket'] });
    await connected(socket);
    const setup = await socket.emitWithAck('initialSetup', {});
    assert.equal(setup.ok, true);
    assert.equal(setup.data.user.username, alice.name);
    socket.emit('joinRoom', r);
    const joined = await until(() => events.find((e) => e.name === 'join'), 'join');
    assert.equal(joined.args[0].roomId, r);
    assert.equal(joined.args[0].username, alice.name);
    socket.emit('message', { roomId: r, message: 'legacy hello', sender: bob.name, username: bob.name });
    const got = await until(() => bobWs.events.find((e) => e.type === 'message'), 'the message on /ws');
    assert.equal(got.data.message.sender.username, alice.name);
    assert.equal(got.data.message.text, 'legacy hello');
    const legacy = await until(() => events.find((e) => e.name === 'message'), 'the legacy message event');
    assert.equal(legacy.args[0].roomId, r);
    assert.equal(legacy.args[0].message, 'legacy hello');
    assert.equal(legacy.args[0].username, alice.name);
    assert.equal(legacy.args[0].seq, got.data.message.seq);
    socket.emit('typing', { roomId: r, message: '' });
    const typing = await until(() => bobWs.events.find((e) => e.type === 'typing'), 'typing on /ws');
    assert.equal(typing.data.user.username, alice.name);
    socket.emit('leaveRoom', { roomId: r });
    await until(() => bobWs.events.find((e) => e.type === 'member_left'), 'member_left on /ws');
    socket.disconnect();
    bobWs.close();
  });

  it('recovers a dropped connection: same id, the missed messages, recovered === true', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const r = await room(bob);
    const bobWs = await wsClient(bob);
    const { socket, events } = sioClient(alice, { transports: ['websocket'] });
    await connected(socket);
    assert.equal(socket.recovered, false);
    await socket.emitWithAck('join_room', { room: r });
    await bobWs.send('send_message', { room: r, text: 'one' });
    await until(() => messagesOf(events).length === 1, 'the first message');
    const id = socket.id;
    const dropped = new Promise((res) => socket.once('disconnect', res));
    socket.io.engine.close();
    await dropped;
    await bobWs.send('send_message', { room: r, text: 'two' });
    await bobWs.send('send_message', { room: r, text: 'three' });
    await new Promise((res) => socket.once('connect', res));
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    const texts = await until(() => {
      const m = messagesOf(events);
      return m.length >= 3 && m.map((x) => x.text);
    }, 'the missed messages');
    assert.deepEqual(texts, ['one', 'two', 'three']);
    socket.disconnect();
    bobWs.close();
  });

  it('recovers across a server restart, from the durable history', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const r = await room(bob);
    const { socket, events } = sioClient(alice, { transports: ['websocket'] });
    await connected(socket);
    await socket.emitWithAck('join_room', { room: r });
    await http('POST', `/api/rooms/${r}/messages`, bob.token, { text: 'before' });
    await until(() => messagesOf(events).length === 1, 'the first message');
    const id = socket.id;
    socket.io.reconnection(false);
    const dropped = new Promise((res) => socket.once('disconnect', res));
    const bind = new URL(base).host;
    await stopServer(server);
    await dropped;
    server = await startServer(bind);
    await http('POST', `/api/rooms/${r}/messages`, bob.token, { text: 'during' });
    await http('POST', `/api/rooms/${r}/messages`, bob.token, { text: 'after' });
    socket.connect();
    await connected(socket);
    assert.equal(socket.recovered, true);
    assert.equal(socket.id, id);
    const texts = await until(() => {
      const m = messagesOf(events);
      return m.length >= 3 && m.map((x) => x.text);
    }, 'the missed messages');
    assert.deepEqual(texts, ['before', 'during', 'after']);
    socket.disconnect();
  });

  it('reconnects on its own after a drop; a fresh client is never recovered', async () => {
    const alice = await user('alice');
    const { socket } = sioClient(alice, { transports: ['websocket'] });
    await connected(socket);
    const reconnected = new Promise((res) => socket.io.once('reconnect', res));
    socket.io.engine.close();
    await reconnected;
    await until(() => socket.connected, 'the socket back on the new connection');
    const pong = await socket.emitWithAck('ping', {});
    assert.equal(pong.ok, true);
    // A fresh client (no pid) is never "recovered".
    const other = io(base, { auth: { token: alice.token }, transports: ['websocket'] });
    await connected(other);
    assert.equal(other.recovered, false);
    other.disconnect();
    socket.disconnect();
  });
});

describe('the official browser bundle in Chromium', () => {
  it('a page on another origin chats with a /ws user', async () => {
    const alice = await user('alice');
    const bob = await user('bob');
    const r = await room(bob);
    const bobWs = await wsClient(bob);
    await bobWs.send('join_room', { room: r });
    const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
    try {
      const page = await browser.newPage();
      const errors = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(`${pagesOrigin}/?server=${encodeURIComponent(base)}&token=${encodeURIComponent(alice.token)}`);
      await page.waitForFunction(() => window.socket && window.socket.connected, null, { timeout: WAIT });
      const joined = await page.evaluate((room) => window.socket.emitWithAck('join_room', { room }), r);
      assert.equal(joined.ok, true);
      const sent = await page.evaluate((room) => window.socket.emitWithAck('send_message', { room, text: 'hi from the browser' }), r);
      assert.equal(sent.ok, true);
      const got = await until(() => bobWs.events.find((e) => e.type === 'message'), 'the browser\'s message on /ws');
      assert.equal(got.data.message.sender.username, alice.name);
      assert.equal(got.data.message.text, 'hi from the browser');
      await bobWs.send('send_message', { room: r, text: 'hi from /ws' });
      await page.waitForFunction((who) => window.texts.includes(`${who}: hi from /ws`), bob.name, { timeout: WAIT });
      // The browser moved from long-polling to WebSocket on its own.
      await page.waitForFunction(() => window.socket.io.engine.transport.name === 'websocket', null, { timeout: WAIT });
      assert.deepEqual(errors, []);
    } finally {
      await browser.close();
      bobWs.close();
    }
  });
});

// The imfree web client's page. Everything that touches keys, the protocol or message contents runs in the
// WebAssembly engine (host/web/src, the same Rust as the native client); this file draws what the engine says, and
// lends it IndexedDB (IdbStore below). Text from the network reaches the page as text nodes, or as HTML only after
// the engine's Markdown renderer sanitised it.
import init, { WebClient } from '/imfree_web.js';

const $ = (id) => document.getElementById(id);
const EMOJIS = ['👍', '❤️', '😂', '🎉', '😮', '😢', '🙏', '👀', '✅', '❌', '🔥', '🚀'];

// IndexedDB as the engine wants it: one object store of byte values under string keys; several writes in one
// transaction.
class IdbStore {
  constructor(db) { this.db = db; }
  static open(name) {
    return new Promise((resolve, reject) => {
      const request = indexedDB.open(name, 1);
      request.onupgradeneeded = () => request.result.createObjectStore('kv');
      request.onsuccess = () => resolve(new IdbStore(request.result));
      request.onerror = () => reject(request.error);
    });
  }
  get(key) {
    return new Promise((resolve, reject) => {
      const request = this.db.transaction('kv').objectStore('kv').get(key);
      request.onsuccess = () => resolve(request.result);
      request.onerror = () => reject(request.error);
    });
  }
  put(entries) {
    return new Promise((resolve, reject) => {
      const tx = this.db.transaction('kv', 'readwrite');
      const kv = tx.objectStore('kv');
      for (const [key, value] of entries) {
        if (value === null) kv.delete(key); else kv.put(value, key);
      }
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error || new Error('transaction aborted'));
    });
  }
  list(prefix) {
    return new Promise((resolve, reject) => {
      const range = prefix === '' ? undefined : IDBKeyRange.bound(prefix, prefix + '\uffff');
      const out = [];
      const request = this.db.transaction('kv').objectStore('kv').openCursor(range);
      request.onsuccess = () => {
        const cursor = request.result;
        if (!cursor) { resolve(out); return; }
        out.push([cursor.key, cursor.value]);
        cursor.continue();
      };
      request.onerror = () => reject(request.error);
    });
  }
}

const state = { client: null, peer: null, replyTo: null, presence: new Map(), typingTimer: null, lastTyping: 0, lastPresenceQuery: 0 };

// Ask again for the open conversation's presence now and then: the relay shows it to contacts, and two users become
// contacts with their first message.
function refreshPresence(force) {
  const now = Date.now();
  if (!state.peer || (!force && now - state.lastPresenceQuery < 15000)) return;
  state.lastPresenceQuery = now;
  try { state.client.queryPresence([state.peer]); } catch (_) { /* offline: asked again later */ }
}

function show(view) {
  $('auth').hidden = view !== 'auth';
  $('chat').hidden = view !== 'chat';
}

function setConnection(text) { $('connection').textContent = text; }

function authError(e) { $('auth-error').textContent = e ? (e.message || String(e)) : ''; }

function time(ts) {
  const d = new Date(Number(ts));
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function statusMark(m) {
  return { pending: '🕓', sent: '✓', delivered: '✓✓', read: '✓✓ read', failed: '⚠ not sent', held: '⏸ held' }[m.status] || '';
}

async function start() {
  performance.mark('imfree-start');
  await init({ module_or_path: '/imfree_web_bg.wasm' });
  const store = await IdbStore.open('imfree');
  const client = new WebClient(store, location.origin.replace(/^http/, 'ws'));
  state.client = client;
  window.imfree = { client, ready: true };
  client.onEvent((json) => onEvent(JSON.parse(json)));
  if (await client.hasAccount()) {
    $('register-panel').hidden = true;
    $('unlock-panel').hidden = false;
  }
  setConnection('not connected');
  show('auth');
  performance.mark('imfree-ready');
}

function onEvent(event) {
  switch (event.type) {
    case 'connection':
      setConnection(event.state === 'online' ? 'connected' : event.state === 'expired' ? 'session ended' : 'offline, reconnecting…');
      if (event.state === 'online') refresh();
      if (event.state === 'expired') {
        show('auth');
        $('unlock-form').hidden = true;
        $('login-form').hidden = false;
      }
      break;
    case 'changed':
      if (event.peer === state.peer) { renderConversation(); refreshPresence(false); }
      renderList();
      break;
    case 'presence':
      state.presence.set(event.user, event.status);
      renderList();
      if (event.user === state.peer) renderPresence();
      break;
    case 'typing':
      if (event.from === state.peer) {
        $('typing').textContent = event.active ? `${event.from} is typing…` : '';
        clearTimeout(state.typingTimer);
        if (event.active) state.typingTimer = setTimeout(() => { $('typing').textContent = ''; }, 8000);
      }
      break;
    case 'notice':
      setConnection(event.text);
      break;
  }
}

async function entered(user) {
  $('me').textContent = user;
  show('chat');
  await refresh();
}

$('register-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  authError(null);
  const user = $('register-user').value.trim();
  const password = $('register-password').value;
  setConnection('creating keys…');
  try {
    await state.client.register(user, password, password, navigator.userAgent.includes('Mobile') ? 'phone browser' : 'browser');
    $('register-password').value = '';
    await entered(state.client.user());
  } catch (err) {
    setConnection('not connected');
    authError(err);
  }
});

$('unlock-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  authError(null);
  setConnection('unlocking…');
  try {
    await state.client.unlock($('unlock-password').value);
    $('unlock-password').value = '';
    await entered(state.client.user());
  } catch (err) {
    if (err.name && err.name.startsWith('refused:token')) {
      $('unlock-form').hidden = true;
      $('login-form').hidden = false;
      setConnection('session ended');
    } else {
      setConnection('not connected');
    }
    authError(err);
  }
});

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  authError(null);
  try {
    const totp = $('login-totp').value.trim();
    await state.client.login($('login-password').value, totp === '' ? undefined : totp);
    $('login-password').value = '';
    $('login-form').hidden = true;
    $('unlock-form').hidden = false;
    await entered(state.client.user());
  } catch (err) {
    authError(err);
  }
});

$('forget').addEventListener('click', async () => {
  if (!confirm('Delete this account\'s keys and messages from this browser? Messages you did not keep elsewhere are lost.')) return;
  await state.client.forget();
  location.reload();
});

async function refresh() {
  await renderList();
  if (state.peer) await renderConversation();
}

async function renderList() {
  const list = JSON.parse(await state.client.conversations());
  const ul = $('conversations');
  ul.replaceChildren();
  for (const c of list) {
    const li = document.createElement('li');
    li.tabIndex = 0;
    li.dataset.peer = c.peer;
    li.setAttribute('aria-current', String(c.peer === state.peer));
    const name = document.createElement('span');
    name.className = 'name';
    const dot = document.createElement('span');
    dot.className = `dot ${state.presence.get(c.peer) || ''}`;
    dot.setAttribute('aria-label', state.presence.get(c.peer) || 'presence unknown');
    name.append(dot, c.peer);
    li.append(name);
    if (c.unread > 0) {
      const badge = document.createElement('span');
      badge.className = 'unread';
      badge.textContent = c.unread;
      badge.setAttribute('aria-label', `${c.unread} unread`);
      li.append(badge);
    }
    const last = document.createElement('span');
    last.className = 'last';
    last.textContent = c.last;
    li.append(last);
    li.addEventListener('click', () => openConversation(c.peer));
    li.addEventListener('keydown', (e) => { if (e.key === 'Enter') openConversation(c.peer); });
    ul.append(li);
  }
  const peers = list.map((c) => c.peer).filter((p) => !state.presence.has(p));
  if (peers.length) { try { state.client.queryPresence(peers); } catch (_) { /* offline: asked again later */ } }
}

async function openConversation(peer) {
  state.peer = peer;
  state.replyTo = null;
  $('reply-bar').hidden = true;
  $('safety').hidden = true;
  $('typing').textContent = '';
  $('peer').textContent = peer;
  $('conversation').hidden = false;
  $('chat').classList.add('open');
  renderPresence();
  await renderConversation();
  await state.client.markRead(peer).catch(() => {});
  refreshPresence(true);
  $('text').focus();
}

function renderPresence() {
  const p = state.presence.get(state.peer);
  $('presence').textContent = p ? p : '';
}

async function renderConversation() {
  const peer = state.peer;
  const messages = JSON.parse(await state.client.history(peer));
  if (peer !== state.peer) return;
  const ol = $('messages');
  const atBottom = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 40;
  ol.replaceChildren();
  const byId = new Map(messages.map((m) => [m.id, m]));
  let held = false;
  let changed = false;
  for (const m of messages) {
    if (m.status === 'held') held = true;
    if (m.status === 'identity-changed') changed = true;
    ol.append(renderMessage(m, byId));
  }
  $('warning').hidden = !(held || changed);
  $('warning-text').textContent = held
    ? `${peer}'s identity key changed. Your messages to ${peer} are held until you compare safety numbers and accept the new key. This can mean a new phone — or an attack.`
    : `Messages from ${peer} arrived under a NEW identity key. Compare safety numbers before you trust them.`;
  if (atBottom || messages.length < 30) ol.scrollTop = ol.scrollHeight;
  if (messages.some((m) => !m.outgoing && !m.read) && document.visibilityState === 'visible') {
    state.client.markRead(peer).catch(() => {});
  }
}

function renderMessage(m, byId) {
  const li = document.createElement('li');
  li.className = `message ${m.outgoing ? 'mine' : ''} ${m.status}`;
  li.dataset.id = m.id;
  li.tabIndex = 0;
  const meta = document.createElement('div');
  meta.className = 'meta';
  const who = document.createElement('span');
  who.textContent = m.from;
  const when = document.createElement('time');
  when.textContent = time(m.ts);
  meta.append(who, when);
  if (m.edited) { const e = document.createElement('span'); e.textContent = 'edited'; meta.append(e); }
  if (m.outgoing) { const s = document.createElement('span'); s.className = 'status'; s.textContent = statusMark(m); meta.append(s); }
  li.append(meta);
  if (m.reply_to) {
    const q = document.createElement('div');
    q.className = 'quote';
    const target = byId.get(m.reply_to);
    q.textContent = target ? `↪ ${target.from}: ${target.deleted ? 'deleted' : target.text.slice(0, 80)}` : '↪ an earlier message';
    li.append(q);
  }
  const body = document.createElement('div');
  body.className = 'body';
  if (m.deleted) {
    body.classList.add('deleted');
    body.textContent = 'This message was deleted.';
  } else if (m.mime === 'text/markdown') {
    body.innerHTML = WebClient.renderMarkdown(m.text); // sanitised by the engine (imfree-markdown, ammonia)
  } else {
    body.textContent = m.text;
  }
  li.append(body);
  if (Object.keys(m.reactions).length) {
    const r = document.createElement('div');
    r.className = 'reactions';
    for (const [emoji, who] of Object.entries(m.reactions)) {
      const b = document.createElement('button');
      b.type = 'button';
      const mine = who.includes(state.client.user());
      b.setAttribute('aria-pressed', String(mine));
      b.title = who.join(', ');
      b.textContent = `${emoji} ${who.length}`;
      b.addEventListener('click', () => act(() => state.client.react(m.id, emoji, mine)));
      r.append(b);
    }
    li.append(r);
  }
  if (!m.deleted && (m.status === 'received' || m.outgoing)) {
    const actions = document.createElement('div');
    actions.className = 'actions';
    const add = (label, aria, fn) => {
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = label;
      b.setAttribute('aria-label', aria);
      b.addEventListener('click', fn);
      actions.append(b);
    };
    add('😊+', 'React', (e) => openPicker(e.currentTarget, m.id));
    add('Reply', 'Reply', () => {
      state.replyTo = m.id;
      $('reply-text').textContent = `Replying to ${m.from}: ${m.text.slice(0, 60)}`;
      $('reply-bar').hidden = false;
      $('text').focus();
    });
    if (m.outgoing) {
      add('Edit', 'Edit', () => {
        const text = prompt('Edit your message', m.text);
        if (text !== null && text.trim() !== '') act(() => state.client.edit(m.id, text));
      });
      add('Delete', 'Delete', () => { if (confirm('Delete this message for everyone?')) act(() => state.client.delete(m.id)); });
    }
    li.append(actions);
  }
  return li;
}

async function act(fn) {
  try { await fn(); } catch (err) { setConnection(err.message || String(err)); }
}

function openPicker(anchor, id) {
  const picker = $('emoji-picker');
  picker.replaceChildren();
  for (const emoji of EMOJIS) {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = emoji;
    b.setAttribute('aria-label', `React with ${emoji}`);
    b.addEventListener('click', () => { picker.hidden = true; act(() => state.client.react(id, emoji, false)); });
    picker.append(b);
  }
  const r = anchor.getBoundingClientRect();
  picker.style.left = `${Math.min(r.left, window.innerWidth - 240)}px`;
  picker.style.top = `${Math.max(8, r.top - 110)}px`;
  picker.hidden = false;
  picker.querySelector('button').focus();
}

document.addEventListener('keydown', (e) => { if (e.key === 'Escape') $('emoji-picker').hidden = true; });
document.addEventListener('click', (e) => {
  const picker = $('emoji-picker');
  if (!picker.hidden && !picker.contains(e.target) && !e.target.closest('.actions')) picker.hidden = true;
});

$('composer').addEventListener('submit', async (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (text.trim() === '' || !state.peer) return;
  $('text').value = '';
  const replyTo = state.replyTo;
  state.replyTo = null;
  $('reply-bar').hidden = true;
  try { state.client.typing(state.peer, false); } catch (_) { /* offline */ }
  state.lastTyping = 0; // "stopped" was just said: the next keystroke says "typing" again at once
  try {
    await state.client.send(state.peer, text, replyTo === null ? undefined : replyTo);
  } catch (err) {
    setConnection(err.message || String(err));
  }
  await renderConversation();
});

$('text').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) {
    e.preventDefault();
    $('composer').requestSubmit();
  }
});

$('text').addEventListener('input', () => {
  const now = Date.now();
  if (state.peer && now - state.lastTyping > 3000) {
    state.lastTyping = now;
    try { state.client.typing(state.peer, true); } catch (_) { /* offline */ }
  }
});

$('reply-cancel').addEventListener('click', () => { state.replyTo = null; $('reply-bar').hidden = true; });

$('new-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const peer = $('new-peer').value.trim();
  if (peer) { $('new-peer').value = ''; openConversation(peer); }
});

$('search-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const query = $('search').value.trim();
  const results = $('results');
  if (query === '') { results.hidden = true; $('conversations').hidden = false; return; }
  const found = JSON.parse(await state.client.search(query));
  results.replaceChildren();
  for (const m of found) {
    const li = document.createElement('li');
    li.tabIndex = 0;
    const name = document.createElement('span');
    name.className = 'name';
    name.textContent = `${m.peer} · ${time(m.ts)}`;
    const last = document.createElement('span');
    last.className = 'last';
    last.textContent = `${m.from}: ${m.text}`;
    li.append(name, last);
    li.addEventListener('click', () => { results.hidden = true; $('conversations').hidden = false; openConversation(m.peer); });
    results.append(li);
  }
  if (!found.length) {
    const li = document.createElement('li');
    li.textContent = 'Nothing found.';
    results.append(li);
  }
  results.hidden = false;
  $('conversations').hidden = true;
});

$('search').addEventListener('input', () => {
  if ($('search').value.trim() === '') { $('results').hidden = true; $('conversations').hidden = false; }
});

$('verify').addEventListener('click', async () => {
  const out = $('safety');
  try {
    out.textContent = `Safety number with ${state.peer} — compare it with theirs:\n${await state.client.safetyNumber(state.peer)}`;
  } catch (err) {
    out.textContent = err.message || String(err);
  }
  out.hidden = false;
});

$('trust').addEventListener('click', () => act(async () => {
  await state.client.trust(state.peer);
  await renderConversation();
}));

$('back').addEventListener('click', () => {
  $('chat').classList.remove('open');
  state.peer = null;
  $('conversation').hidden = true;
  renderList();
});

document.addEventListener('visibilitychange', () => {
  if (document.visibilityState === 'visible' && state.peer) state.client.markRead(state.peer).catch(() => {});
});

start().catch((err) => {
  setConnection('failed to start');
  authError(err);
});

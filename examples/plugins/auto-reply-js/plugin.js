// Auto-reply in JavaScript, the twin of examples/plugins/auto-reply (Rust): when a message contains the configured
// keyword, reply with the configured text as the bot, and count the replies in kv; `/auto-reply` shows the count.
//
// Built into a WebAssembly component for the world imfree:plugin/plugin@0.1.0 by componentize-js (StarlingMonkey):
// host interfaces are ES modules named by their WIT ids, hooks are exported functions in camelCase, variants are
// `{ tag, val }`, a `result` error from the host is thrown (its `payload` is the host-error variant) and an
// exception thrown out of a hook traps the instance (the host contains it and re-instantiates).

import { log } from 'imfree:plugin/log@0.1.0';
import { get as setting } from 'imfree:plugin/config@0.1.0';
import * as kv from 'imfree:plugin/kv@0.1.0';
import { reply } from 'imfree:plugin/messaging@0.1.0';

const utf8 = new TextEncoder();
const text = new TextDecoder();

function settingOr(key, fallback) {
  const value = setting(key);
  return value === undefined || value === null ? fallback : value;
}

// `denied: capability kv is not granted by the administrator`, as HostErrorExt::describe does in the Rust SDK.
function describe(error) {
  const e = error && error.payload !== undefined ? error.payload : error;
  if (e && typeof e.tag === 'string') {
    return `${e.tag.replace('-', ' ')}: ${e.val}`;
  }
  return String(e);
}

// Add `by` to the integer under `key` (missing counts as 0), like the SDK's kv::increment.
function increment(key, by) {
  const current = kv.get(key);
  const n = (current === undefined || current === null ? 0 : parseInt(text.decode(current), 10) || 0) + by;
  kv.set(key, utf8.encode(String(n)));
  return n;
}

export function init() {
  log('info', 'auto-reply-js ready');
}

export function incomingMessage(msg) {
  const keyword = settingOr('keyword', 'ping').toLowerCase();
  if (keyword === '' || !msg.body.toLowerCase().includes(keyword)) {
    return;
  }
  try {
    reply(msg.conversation, msg.id, settingOr('reply', 'pong'));
  } catch (e) {
    log('warn', `could not reply: ${describe(e)}`);
    return;
  }
  try {
    increment('replies', 1);
  } catch (_) {
    // Counting is best effort, as in the Rust twin.
  }
}

export function command(_cmd) {
  let n = '0';
  try {
    const stored = kv.get('replies');
    if (stored !== undefined && stored !== null) {
      n = text.decode(stored);
    }
  } catch (_) {
    // Without the kv grant the count is unknown; show 0 like the Rust twin.
  }
  return `auto-reply answered ${n} times`;
}

// The world asks every plugin to export every hook; the host calls only those listed in plugin.toml.
export function outgoingMessage(_msg) {
  return { tag: 'pass' };
}

export function relayEnvelope(_env) {
  return { tag: 'pass' };
}

export function statusChange(_change) {}

export function action(_act) {}

export function http(_req) {
  return { status: 404, headers: [], body: utf8.encode('not found') };
}

export function timer(_t) {}

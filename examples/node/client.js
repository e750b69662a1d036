#!/usr/bin/env node
// FaceSleuth Edge events in Node.js: subscribe to `mer.event`, repair gaps through the replay endpoint,
// print each event once, in sequence order.
//
//   npm ci
//   node client.js --pub tcp://127.0.0.1:5571 --replay tcp://127.0.0.1:5572 [--since 0] [--count N] [--json]
//
// The wire format (README, "Events"): the PUB socket sends two frames, the topic "mer.event" and one
// msgpack map per event with a gap-free `seq` assigned by the device's event log. The replay endpoint
// (ROUTER; talk to it with a DEALER) answers msgpack {since: N, limit: M} with
// {events: [...], last_seq: L}, or {error: "..."}. A subscriber that sees seq jump, or starts late with
// --since, asks for what it missed; events it already has are dropped, so it never prints one twice.

"use strict";

const zmq = require("zeromq");
const { encode, decode } = require("@msgpack/msgpack");

function parseArgs(argv) {
  const opts = { pub: "tcp://127.0.0.1:5571", replay: "tcp://127.0.0.1:5572", since: null, count: 0,
                 json: false, timeoutMs: 5000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === "--pub") opts.pub = value();
    else if (a === "--replay") opts.replay = value();
    else if (a === "--since") opts.since = parseInt(value(), 10);
    else if (a === "--count") opts.count = parseInt(value(), 10);
    else if (a === "--timeout-ms") opts.timeoutMs = parseInt(value(), 10);
    else if (a === "--json") opts.json = true;
    else if (a === "-h" || a === "--help") {
      console.log("usage: node client.js [--pub EP] [--replay EP] [--since N] [--count N] [--json]");
      process.exit(0);
    } else throw new Error(`unknown argument ${a}`);
  }
  for (const k of ["since", "count", "timeoutMs"]) {
    if (opts[k] !== null && Number.isNaN(opts[k])) throw new Error(`--${k} needs a number`);
  }
  return opts;
}

// Every event with seq > since, paging through the replay endpoint until it has reached last_seq.
async function replay(endpoint, since, timeoutMs) {
  const out = [];
  for (;;) {
    const req = new zmq.Dealer({ receiveTimeout: timeoutMs, linger: 0 });
    req.connect(endpoint);
    let reply;
    try {
      await req.send(encode({ since, limit: 1000 }));
      const [body] = await req.receive();
      reply = decode(body);
    } catch (e) {
      throw new Error(`no answer from replay endpoint ${endpoint} (${e.message})`);
    } finally {
      req.close();
    }
    if (reply.error) throw new Error(`replay refused: ${reply.error}`);
    out.push(...reply.events);
    if (reply.events.length === 0 || out[out.length - 1].seq >= reply.last_seq) return out;
    since = out[out.length - 1].seq;
  }
}

function format(ev) {
  const scores = Object.entries(ev.scores || {}).sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k}=${Number(v).toFixed(2)}`).join(" ");
  const ms = Math.round((ev.duration_s || 0) * 1000);
  return `event #${ev.seq} ${ev.stream}/track ${ev.track_id}: ${ev.kind} ${ev.label} ` +
    `(${Number(ev.confidence || 0).toFixed(2)}) ${ms} ms [${scores}]`;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  let last = opts.since; // highest seq printed (null: take the stream from the first live event)
  let printed = 0;
  let repaired = 0;

  const emit = (ev) => {
    if (typeof ev.seq !== "number" || (last !== null && ev.seq <= last)) return false; // duplicate
    last = ev.seq;
    printed++;
    // Event maps may hold binary fields (the opt-in debug crop): JSON gets their length, not the bytes.
    console.log(opts.json ? JSON.stringify(ev, (k, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v))
                          : format(ev));
    return opts.count > 0 && printed >= opts.count;
  };
  const catchUp = async () => {
    for (const ev of await replay(opts.replay, last, opts.timeoutMs)) {
      repaired++;
      if (emit(ev)) return true;
    }
    return false;
  };

  const sub = new zmq.Subscriber({ linger: 0 });
  sub.connect(opts.pub);
  sub.subscribe("mer.event");
  const stop = () => { sub.close(); };
  process.on("SIGINT", stop);
  process.on("SIGTERM", stop);

  if (last !== null && await catchUp()) return finish();
  try {
    for await (const frames of sub) {
      if (frames.length !== 2 || frames[0].toString() !== "mer.event") continue; // foreign message
      let ev;
      try { ev = decode(frames[1]); } catch { continue; }
      if (last !== null && ev.seq > last + 1) { // a gap: fetch what we missed, then this one
        if (await catchUp()) return finish();
      }
      if (emit(ev)) return finish();
    }
  } catch (e) {
    if (!sub.closed) throw e;
  }
  return finish();

  function finish() {
    if (!sub.closed) sub.close();
    console.error(`facesleuth-events: ${printed} events (${repaired} through replay), last seq ${last}`);
  }
}

main().catch((e) => {
  console.error(`facesleuth-events: error: ${e.message}`);
  process.exit(1);
});

// One scripted session of jackd (Node.js, from the npm registry; tests/clients/node/package.json
// pins it) against a beanstalkd-protocol server on 127.0.0.1:PORT, printing a transcript in which
// job ids are replaced by J1, J2, ... (order of first appearance). tests/clients/test_clients.py
// compares the transcript from beanrouter with the one from the real beanstalkd. jackd writes each
// command as it is called and matches the replies in order, so the parts run with Promise.all are
// pipelined on one connection. Usage: node scenario.js PORT
'use strict';

const path = require('path');
const modules = process.env.BEANROUTER_NODE_MODULES || path.join(__dirname, 'node', 'node_modules');
const Jackd = require(path.join(modules, 'jackd'));

const PORT = Number(process.argv[2]);
const ids = new Map();
function jid(id) {
  const key = String(id);
  if (!ids.has(key)) ids.set(key, `J${ids.size + 1}`);
  return ids.get(key);
}

function job(j) {
  return j === null ? 'null' : `${jid(j.id)} ${j.payload.toString()}`;
}

function yaml(text) {
  const out = {};
  for (const line of text.split('\n')) {
    const m = /^([a-z-]+): (.*)$/.exec(line);
    if (m) out[m[1]] = m[2].replace(/^"(.*)"$/, '$1');
  }
  return out;
}

function fields(text, keys) {
  const s = yaml(text);
  return keys.map((k) => `${k}=${k === 'id' ? jid(s[k]) : s[k]}`).join(' ');
}

async function attempt(what, fn) {
  try {
    console.log(`${what} ${await fn()}`);
  } catch (e) {
    console.log(`${what} ${e.message}`);
  }
}

async function reserve(c, timeout) {
  try {
    return await c.reserveWithTimeout(timeout);
  } catch (e) {
    if (e.message === 'TIMED_OUT') return null;
    throw e;
  }
}

async function client() {
  const c = new Jackd();
  await c.connect({ host: '127.0.0.1', port: PORT });
  return c;
}

const JOB = ['id', 'tube', 'state', 'pri', 'delay', 'ttr', 'reserves', 'releases', 'buries',
  'kicks', 'timeouts'];
const TUBE = ['name', 'current-jobs-urgent', 'current-jobs-ready', 'current-jobs-reserved',
  'current-jobs-delayed', 'current-jobs-buried', 'total-jobs', 'current-using',
  'current-watching', 'cmd-delete', 'cmd-pause-tube', 'pause'];

async function main() {
  const c = await client();
  console.log(`use ${await c.use('emails')}`);
  const a = await c.put('welcome', { priority: 100, delay: 0, ttr: 60 });
  const b = await c.put('digest', { priority: 50, delay: 0, ttr: 60 });
  const d = await c.put('later', { priority: 10, delay: 3, ttr: 60 });
  console.log(`put ${jid(a)} ${jid(b)} ${jid(d)}`);
  console.log(`used ${await c.listTubeUsed()}`);
  console.log(`watch ${await c.watch('emails')} ignore ${await c.ignore('default')}`);
  let j = await reserve(c, 1);
  console.log(`reserve ${job(j)}`);
  console.log(`stats-job ${fields(await c.statsJob(j.id), JOB)}`);
  await c.release(j.id, { priority: 50, delay: 0 });
  j = await reserve(c, 1);
  const st = yaml(await c.statsJob(j.id));
  console.log(`reserve ${job(j)} attempts ${st.reserves} releases ${st.releases}`);
  await c.touch(j.id);
  await c.delete(j.id);
  console.log('deleted');
  await attempt('delete-again', () => c.delete(j.id));
  await attempt('stats-job-gone', () => c.statsJob(j.id));

  j = await reserve(c, 1);
  console.log(`reserve ${job(j)}`);
  await c.bury(j.id, 7);
  console.log(`peek-buried ${job(await c.peekBuried())}`);
  console.log(`stats-job ${fields(await c.statsJob(j.id), JOB)}`);
  console.log(`peek-delayed ${job(await c.peekDelayed())}`);
  await attempt('peek-ready', async () => job(await c.peekReady()));
  console.log(`stats-tube ${fields(await c.statsTube('emails'), TUBE)}`);
  await c.kickJob(j.id);
  console.log(`kicked ${fields(await c.statsJob(j.id), ['id', 'state', 'kicks'])}`);
  console.log(`reserve-0 ${job(await reserve(c, 0))}`);
  console.log(`reserve-0 ${job(await reserve(c, 0))}`);
  console.log(`reserve-6 ${job(await reserve(c, 6))}`);
  console.log(`stats-tube ${fields(await c.statsTube('emails'), TUBE)}`);

  // Puts over six tubes (a cluster spreads them over its shards) and the watches, pipelined;
  // reserves in priority order across them; the releases and deletes pipelined.
  const tubes = ['alpha', 'bravo', 'charlie', 'delta', 'echo', 'foxtrot'];
  const puts = [];
  [30, 10, 20, 10, 5, 30, 10, 20].forEach((pri, n) => {
    const t = tubes[n % tubes.length];
    puts.push(c.use(t).then(() => null));
    puts.push(c.put(`${t}-${pri}-${n}`, { priority: pri, ttr: 60 }).then((id) => `${t} ${jid(id)}`));
  });
  for (const line of (await Promise.all(puts)).filter((x) => x !== null)) console.log(`put ${line}`);
  const watched = await Promise.all(tubes.map((t) => c.watch(t)));
  console.log(`watching ${watched.join(',')}`);
  const held = []; // one at a time: jackd never finishes pipelined reserves, beanstalkd's too
  for (let i = 0; i < 8; i++) {
    held.push(await reserve(c, 1));
    console.log(`reserve ${job(held[i])}`);
  }
  console.log(`reserve-0 ${job(await reserve(c, 0))}`);
  await Promise.all(held.map((h) => c.release(h.id, { priority: 1, delay: 0 })));
  await c.use('charlie');
  console.log(`peek-ready charlie ${job(await c.peekReady())}`);
  await Promise.all(held.map((h) => c.delete(h.id)));
  const names = (await c.listTubesWatched()).split('\n').filter((l) => l.startsWith('- '));
  console.log(`list-tubes-watched ${names.map((l) => l.slice(2)).sort().join(',')}`);

  // PHP-style short connections, then one worker drains them.
  for (let i = 0; i < 20; i++) {
    const q = await client();
    await q.use('short');
    console.log(`short put ${jid(await q.put(`short-${i}`, { priority: 100 - (i % 3), ttr: 60 }))}`);
    await q.disconnect();
  }
  await c.watch('short');
  for (let i = 0; i < 20; i++) {
    const s = await reserve(c, 1);
    console.log(`short reserve ${job(s)}`);
    await c.delete(s.id);
  }

  // A worker that vanishes holding a job: the job is ready again at once, counted as released.
  const w = await client();
  await c.use('vanish');
  await c.put('orphan', { priority: 1, ttr: 60 });
  await w.watch('vanish');
  console.log(`worker reserve ${job(await reserve(w, 1))}`);
  await w.disconnect();
  await new Promise((r) => setTimeout(r, 200));
  await c.watch('vanish');
  j = await reserve(c, 2);
  console.log(`after vanish ${job(j)} ${fields(await c.statsJob(j.id), ['reserves', 'releases'])}`);
  await c.delete(j.id);

  // (no pause-tube: jackd 2.2.2 sends it without its \r\n, and beanstalkd waits for the line)
  await attempt('stats-tube-missing', () => c.statsTube('nope'));
  await attempt('peek-missing', async () => job(await c.peek('999999')));
  await attempt('reserve-job-missing', async () => job(await c.reserveJob(999999)));
  const s = yaml(await c.stats());
  console.log(`stats ${['current-jobs-ready', 'current-jobs-reserved', 'current-jobs-buried',
    'cmd-put', 'cmd-reserve-with-timeout', 'cmd-use', 'total-jobs', 'current-tubes']
    .map((k) => `${k}=${s[k]}`).join(' ')}`);
  await c.quit();
  console.log('done');
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

'use strict'
// One WAMP scenario run by a JavaScript client from npm against a router, for
// tests/slow/test_wamp_js.py. The script only observes: it prints what it saw as one JSON line
// on stdout and the Python test asserts on it.
//
//   node wamp_client.js SCENARIO URL REALM SERIALIZER [ARGS...]
//
// URL: ws://host:port/ (WebSocket) or, for the autobahn-* scenarios, tcp://host:port (RawSocket).
//
// SCENARIO: autobahn-pubsub | wampy-pubsub | autobahn-rpc | wampy-rpc | cross-pubsub |
//           cross-rpc | autobahn-subscribe TOPIC COUNT
// SERIALIZER: json | msgpack (| cbor for autobahn alone)
//
// Exit 0 with {"ok": true, ...} or exit 1 with {"ok": false, "error": "..."}; the whole run
// is bounded by WAMP_JS_TIMEOUT_MS (default 20 s).

if (typeof globalThis.WebSocket === 'undefined') {
  // autobahn-js uses the global WebSocket (Node.js 22+); on older Node the `ws` package
  // provides the same browser API. Unlike a browser's, a `ws` socket without an 'error' listener
  // throws on a failed connect; autobahn-js sets no onerror (it waits for the close that follows).
  const WS = require('ws')
  globalThis.WebSocket = class extends WS {
    constructor (...args) {
      super(...args)
      this.on('error', () => {})
    }
  }
}

const autobahn = require('autobahn')
const { Wampy } = require('wampy')
const { JsonSerializer } = require('wampy/JsonSerializer.js')
const { MsgpackSerializer } = require('wampy/MsgpackSerializer.js')
const { CborSerializer } = require('wampy/CborSerializer.js')
const W3CWebSocket = require('websocket').w3cwebsocket

const [scenario, url, realm, serializer, ...rest] = process.argv.slice(2)
const TIMEOUT_MS = Number(process.env.WAMP_JS_TIMEOUT_MS || 20000)
const EVENTS = 20

// A payload that a lossy serializer or router would change: nested containers, floats,
// negative and large integers, null, booleans and non-ASCII text.
function payload (i) {
  return {
    args: [i, `event-${i}`, { nested: [1, 2.5, null, true, false] }],
    kwargs: { seq: i, text: 'żółw ✓ 🐢', big: 9007199254740991, neg: -42, half: 0.5 }
  }
}

// wampy.js (msgpackr) decodes a msgpack uint64/int64 as a BigInt; autobahn-js (msgpack5) writes
// integers beyond 32 bits that way, so between the two such a value arrives as a BigInt of the
// same value. Report it as a number when that is exact, else as a string (which fails the test).
function report (key, value) {
  if (typeof value === 'bigint') {
    return Number.isSafeInteger(Number(value)) ? Number(value) : `bigint:${value}`
  }
  return value
}

function done (result, code) {
  process.stdout.write(JSON.stringify(result, report) + '\n', () => process.exit(code))
}

const timer = setTimeout(() => done({ ok: false, error: `timeout after ${TIMEOUT_MS} ms` }, 1), TIMEOUT_MS)

function until (pred, what, ms = 10000) {
  return new Promise((resolve, reject) => {
    const start = Date.now()
    const tick = () => {
      if (pred()) return resolve()
      if (Date.now() - start > ms) return reject(new Error(`timed out waiting for ${what}`))
      setTimeout(tick, 10)
    }
    tick()
  })
}

// ------------------------------------------------------------------ autobahn-js

function autobahnSerializer () {
  switch (serializer) {
    case 'json': return new autobahn.serializer.JSONSerializer()
    case 'msgpack': return new autobahn.serializer.MsgpackSerializer()
    case 'cbor': return new autobahn.serializer.CBORSerializer()
    default: throw new Error(`unknown serializer ${serializer}`)
  }
}

// URL ws://host:port/ -> WebSocket; tcp://host:port -> RawSocket (autobahn-js alone, JSON only:
// its Node RawSocket transport has no other serializer).
function autobahnTransport () {
  if (url.startsWith('tcp://')) {
    if (serializer !== 'json') throw new Error('autobahn-js RawSocket speaks JSON only')
    const { hostname, port } = new URL(url)
    return { transports: [{ type: 'rawsocket', host: hostname, port: Number(port) }] }
  }
  return { url, serializers: [autobahnSerializer()] }
}

function autobahnOpen () {
  return new Promise((resolve, reject) => {
    const connection = new autobahn.Connection({
      ...autobahnTransport(),
      realm,
      max_retries: 0,
      retry_if_unreachable: false
    })
    connection.onopen = (session) => resolve({ connection, session })
    connection.onclose = (reason, details) => {
      reject(new Error(`autobahn connection closed: ${reason} ${JSON.stringify(details)}`))
      return true // no reconnect
    }
    connection.open()
  })
}

function autobahnClose ({ connection }) {
  try { connection.close() } catch (e) { /* already closed */ }
}

// ------------------------------------------------------------------ wampy.js

function wampySerializer () {
  switch (serializer) {
    case 'json': return new JsonSerializer()
    case 'msgpack': return new MsgpackSerializer()
    case 'cbor': return new CborSerializer()
    default: throw new Error(`unknown serializer ${serializer}`)
  }
}

async function wampyOpen () {
  const client = new Wampy(url, {
    realm,
    ws: W3CWebSocket,
    serializer: wampySerializer(),
    autoReconnect: false
  })
  await client.connect()
  return client
}

async function wampyClose (client) {
  try { await client.disconnect() } catch (e) { /* already closed */ }
}

// ------------------------------------------------------------------ roles, one per library
// A subscriber collects {args, kwargs, publication}; a publisher returns the PUBLISHED ids;
// a callee offers com.ordo.js.add (sum + kwargs echo) and com.ordo.js.fail (an application
// error with args and kwargs); a caller reports results and errors.

const subscribers = {
  async autobahn (topic, events) {
    const s = await autobahnOpen()
    await s.session.subscribe(topic, (args, kwargs, details) => {
      events.push({ args, kwargs: kwargs || {}, publication: details.publication, topic: details.topic || null })
    })
    return () => autobahnClose(s)
  },
  async wampy (topic, events) {
    const c = await wampyOpen()
    await c.subscribe(topic, ({ argsList, argsDict }) => {
      events.push({ args: argsList, kwargs: argsDict || {}, publication: null })
    })
    return () => wampyClose(c)
  }
}

const publishers = {
  async autobahn (topic, n) {
    const s = await autobahnOpen()
    const ids = []
    for (let i = 0; i < n; i++) {
      const p = payload(i)
      const publication = await s.session.publish(topic, p.args, p.kwargs, { acknowledge: true })
      ids.push(publication.id)
    }
    autobahnClose(s)
    return ids
  },
  async wampy (topic, n) {
    const c = await wampyOpen()
    const ids = []
    for (let i = 0; i < n; i++) {
      const p = payload(i)
      const r = await c.publish(topic, { argsList: p.args, argsDict: p.kwargs }, { acknowledge: true })
      ids.push(r.publicationId)
    }
    await wampyClose(c)
    return ids
  }
}

const callees = {
  async autobahn (prefix) {
    const s = await autobahnOpen()
    await s.session.register(`${prefix}.add`, (args, kwargs) => {
      return new autobahn.Result([args[0] + args[1]], { echo: kwargs || {}, callee: 'autobahn' })
    })
    await s.session.register(`${prefix}.fail`, (args) => {
      throw new autobahn.Error('com.ordo.error.custom', ['bad', args[0]], { why: 'because' })
    })
    return () => autobahnClose(s)
  },
  async wampy (prefix) {
    const c = await wampyOpen()
    await c.register(`${prefix}.add`, ({ argsList, argsDict }) => {
      return { argsList: [argsList[0] + argsList[1]], argsDict: { echo: argsDict || {}, callee: 'wampy' } }
    })
    await c.register(`${prefix}.fail`, ({ argsList }) => {
      // wampy sends a thrown {error, argsList, argsDict} as an ERROR message
      throw { error: 'com.ordo.error.custom', details: {}, argsList: ['bad', argsList[0]], argsDict: { why: 'because' } } // eslint-disable-line no-throw-literal
    })
    return () => wampyClose(c)
  }
}

async function settle (promise) {
  try {
    return { result: await promise }
  } catch (e) {
    return { error: e }
  }
}

const callers = {
  async autobahn (prefix) {
    const s = await autobahnOpen()
    const out = { results: [], errors: [] }
    for (const [a, b] of [[1, 2], [40, 2], [-5, 2.5]]) {
      const r = await s.session.call(`${prefix}.add`, [a, b], { a, b, note: 'ü' })
      out.results.push({ args: r.args, kwargs: r.kwargs })
    }
    for (const proc of [`${prefix}.fail`, `${prefix}.missing`]) {
      const { result, error } = await settle(s.session.call(proc, [7]))
      if (error) out.errors.push({ error: error.error, args: error.args || [], kwargs: error.kwargs || {} })
      else out.errors.push({ unexpected_result: result })
    }
    autobahnClose(s)
    return out
  },
  async wampy (prefix) {
    const c = await wampyOpen()
    const out = { results: [], errors: [] }
    for (const [a, b] of [[1, 2], [40, 2], [-5, 2.5]]) {
      const r = await c.call(`${prefix}.add`, { argsList: [a, b], argsDict: { a, b, note: 'ü' } })
      out.results.push({ args: r.argsList, kwargs: r.argsDict })
    }
    for (const proc of [`${prefix}.fail`, `${prefix}.missing`]) {
      const { result, error } = await settle(c.call(proc, { argsList: [7] }))
      if (error) out.errors.push({ error: error.errorUri, args: error.argsList || [], kwargs: error.argsDict || {} })
      else out.errors.push({ unexpected_result: result })
    }
    await wampyClose(c)
    return out
  }
}

// ------------------------------------------------------------------ scenarios

async function pubsub (subLib, pubLib) {
  const topic = `com.ordo.js.${subLib}.${pubLib}.${serializer}`
  const events = []
  const closeSub = await subscribers[subLib](topic, events)
  const published = await publishers[pubLib](topic, EVENTS)
  await until(() => events.length >= EVENTS, `${EVENTS} events`)
  await new Promise((resolve) => setTimeout(resolve, 200)) // catch any extra (duplicate) event
  await closeSub()
  return { published, events, expected: Array.from({ length: EVENTS }, (_, i) => payload(i)) }
}

async function rpc (calleeLib, callerLib) {
  const prefix = `com.ordo.js.${calleeLib}.${callerLib}.${serializer}`
  const closeCallee = await callees[calleeLib](prefix)
  const out = await callers[callerLib](prefix)
  await closeCallee()
  return { prefix, ...out }
}

// Subscribe with autobahn-js, print {"ready": true}, then report the first COUNT events.
async function subscribeOnly (topic, count) {
  const events = []
  const close = await subscribers.autobahn(topic, events)
  process.stdout.write(JSON.stringify({ ready: true }) + '\n')
  await until(() => events.length >= count, `${count} events`, TIMEOUT_MS)
  await new Promise((resolve) => setTimeout(resolve, 200))
  await close()
  return { events }
}

const scenarios = {
  'autobahn-pubsub': () => pubsub('autobahn', 'autobahn'),
  'wampy-pubsub': () => pubsub('wampy', 'wampy'),
  'cross-pubsub': async () => ({
    autobahn_to_wampy: await pubsub('wampy', 'autobahn'),
    wampy_to_autobahn: await pubsub('autobahn', 'wampy')
  }),
  'autobahn-rpc': () => rpc('autobahn', 'autobahn'),
  'wampy-rpc': () => rpc('wampy', 'wampy'),
  'cross-rpc': async () => ({
    autobahn_calls_wampy: await rpc('wampy', 'autobahn'),
    wampy_calls_autobahn: await rpc('autobahn', 'wampy')
  }),
  'autobahn-subscribe': () => subscribeOnly(rest[0], Number(rest[1]))
}

async function main () {
  const run = scenarios[scenario]
  if (!run) throw new Error(`unknown scenario ${scenario}`)
  const result = await run()
  clearTimeout(timer)
  done({ ok: true, ...result }, 0)
}

process.on('uncaughtException', (e) => {
  clearTimeout(timer)
  done({ ok: false, error: `uncaught: ${String((e && e.stack) || e)}` }, 1)
})

main().catch((e) => {
  clearTimeout(timer)
  const uri = e && (e.errorUri || e.error) ? ` (${e.errorUri || e.error})` : ''
  done({ ok: false, error: String((e && e.stack) || e) + uri }, 1)
})

'use strict'
// Launch fox-wamp (pinned in package.json) as a benchmark peer for ordo-bench.
// Usage: node foxwamp.js MQTT_PORT [WAMP_PORT]
// Listens on 127.0.0.1 only; exits on SIGTERM/SIGINT, and also when stdin reaches EOF if
// FOXWAMP_EXIT_ON_STDIN_EOF=1 (ordo-bench sets it and holds a pipe, so the router cannot outlive
// the harness even if the harness is killed without cleaning up).
// FOXWAMP_NODELAY=1 turns Nagle's algorithm off on accepted sockets (fox-wamp leaves it on, which
// holds small PUBACKs back by a few ms); ordo-bench sets it unless run with --peer-defaults.
const net = require('net')
const FoxRouter = require('fox-wamp')

if (process.env.FOXWAMP_NODELAY === '1') {
  const emit = net.Server.prototype.emit
  net.Server.prototype.emit = function (event, socket, ...rest) {
    if (event === 'connection' && socket && typeof socket.setNoDelay === 'function') {
      socket.setNoDelay(true)
    }
    return emit.call(this, event, socket, ...rest)
  }
}

const host = '127.0.0.1'
const mqttPort = Number(process.argv[2])
const wampPort = process.argv[3] === undefined ? null : Number(process.argv[3])
if (!Number.isInteger(mqttPort) || mqttPort <= 0 || mqttPort > 65535) {
  console.error('usage: node foxwamp.js MQTT_PORT [WAMP_PORT]')
  process.exit(2)
}

const router = new FoxRouter()
router.listenMQTT({ host, port: mqttPort })
console.log(`fox-wamp mqtt listening on ${host}:${mqttPort}`)
if (wampPort !== null) {
  router.listenWAMP({ host, port: wampPort })
  console.log(`fox-wamp wamp listening on ${host}:${wampPort}`)
}

const stop = () => process.exit(0)
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
if (process.env.FOXWAMP_EXIT_ON_STDIN_EOF === '1') {
  process.stdin.on('end', stop)
  process.stdin.on('error', stop)
  process.stdin.resume()
}

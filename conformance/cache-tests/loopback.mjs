// Starts the cache-tests origin (server/server.mjs of the http-cache-tests package, whose
// directory is CACHE_TESTS_DIR) listening on 127.0.0.1 only: the package's server listens on
// every interface, and these tests must never be reachable from, or sent to, anything but
// loopback.
import http from 'http'

const listen = http.Server.prototype.listen
http.Server.prototype.listen = function (port, ...rest) {
  return listen.call(this, port, '127.0.0.1', ...rest)
}
await import(`${process.env.CACHE_TESTS_DIR}/server/server.mjs`)

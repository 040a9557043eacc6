#!/usr/bin/env node
// Before `npm test`: make sure the system programs the suites start are present — redis-server (a private one per
// suite), Chromium (the report and status-page tests), promtool (the alert rules' check; Debian's `prometheus`
// package carries it), Python's prometheus_client (the OpenMetrics exposition's check) and ZooKeeper with a Java
// runtime (a private server per app-registry suite: Debian's `libzookeeper-java`, the jars of its `zookeeper` package
// without the system service, and `default-jre-headless`). As root with apt-get (a fresh machine or CI), missing ones
// are installed from Debian's packages; otherwise the missing ones are named and the run stops.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

const onPath = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
const missing = []
if (!onPath('redis-server')) missing.push('redis-server')
if (!existsSync('/usr/bin/chromium')) missing.push('chromium')
if (!onPath('promtool')) missing.push('prometheus')
// The OpenMetrics exposition's check: the parser of Python's prometheus_client.
if (spawnSync('/usr/bin/python3', ['-c', 'import prometheus_client.openmetrics.parser'], { stdio: 'ignore' }).status !== 0) missing.push('python3-prometheus-client')
if (!existsSync('/usr/share/java/zookeeper.jar')) missing.push('libzookeeper-java')
if (!onPath('java')) missing.push('default-jre-headless')
if (missing.length === 0) process.exit(0)

const root = typeof process.getuid === 'function' && process.getuid() === 0
if (!root || !onPath('apt-get')) {
  process.stderr.write(`npm test needs ${missing.join(' and ')}: install ${missing.length > 1 ? 'them' : 'it'} (Debian: apt-get install -y ${missing.join(' ')})\n`)
  process.exit(1)
}
process.stderr.write(`installing ${missing.join(', ')} for the test suites (apt-get)\n`)
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env })
execFileSync('apt-get', ['install', '-y', '-qq', ...missing], { stdio: ['ignore', 'ignore', 'inherit'], env })

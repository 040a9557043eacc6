// Headless Chromium for tests that look at a page: Debian's `chromium` package, driven by playwright-core.
// `.ci/run` installs the package when /usr/bin/chromium is missing.
import fs from 'node:fs'
import { chromium, type Browser } from 'playwright-core'

export const CHROMIUM = '/usr/bin/chromium'
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync']

interface Teardown { teardown: (fn: () => unknown) => void }

/** Launches Chromium (closed in teardown); throws with the install command when it is not there. */
export async function launchBrowser (t: Teardown): Promise<Browser> {
  if (!fs.existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} not found: install it with \`apt-get install -y chromium\` (.ci/run does)`)
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ARGS, timeout: 60_000 })
  t.teardown(async () => { await browser.close() })
  return browser
}

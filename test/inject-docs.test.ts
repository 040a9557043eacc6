import t from 'tap'
import { readFileSync } from 'node:fs'
import { renderConfigDoc, DOC_PATH } from '../tools/src/config-doc.js'
import { SETTINGS, annotationFor } from '../src/config/table.js'
import { INJECTOR_ANNOTATIONS, annotatableSettings } from '../src/inject/annotations.js'

t.test('docs/configuration.md is generated from the settings table and up to date', async (t) => {
  const committed = readFileSync(DOC_PATH, 'utf8')
  const fresh = renderConfigDoc()
  t.ok(committed === fresh, 'docs/configuration.md is stale: run `npm run docs:config` and commit the result')
})

t.test('the generated doc names every setting, its annotation and default', async (t) => {
  const doc = renderConfigDoc()
  for (const s of SETTINGS) {
    const row = doc.split('\n').find((l) => l.startsWith(`| \`${s.env}\` |`))
    t.ok(row, `${s.env} has a row`)
    if (s.default !== undefined && s.default !== '') t.match(row, `\`${s.default}\``, `${s.env}: its default`)
  }
  for (const s of annotatableSettings()) t.match(doc, `| \`${s.env}\` | \`${annotationFor(s.env)}\` |`, `${s.env} ⇄ ${annotationFor(s.env)}`)
  for (const a of INJECTOR_ANNOTATIONS) t.match(doc, `| \`${a.name}\` |`, a.name)
  t.match(doc, /GET \/drain\?wait=1/)
})

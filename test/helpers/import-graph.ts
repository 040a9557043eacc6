// The import graph of a TypeScript tree, read by dpdm (which parses and resolves with the TypeScript compiler, so
// NodeNext's `./x.js` specifiers find `x.ts` as tsc does). Type-only imports count: a cycle through types is still a
// cycle between two modules' meanings. Used by test/import-graph.test.ts.
import path from 'node:path'
import { parseDependencyTree, parseCircular } from 'dpdm'

export interface ImportGraph {
  /** Every file of the tree (relative to `root`, `/`-separated) and the files of the tree it imports. */
  files: Map<string, Set<string>>
  /** Arrows from a file of the tree to a file of the repository outside it (not a package): `[from, to]`. */
  outside: Array<[string, string]>
  /** File-level cycles, as dpdm reports them (each a list of files, the last importing the first). */
  cycles: string[][]
}

/** Reads the imports of every `.ts` file under `root/dir` (static, dynamic and type-only). */
export async function importGraph (root: string, dir: string, tsconfig: string): Promise<ImportGraph> {
  const tree = await parseDependencyTree([`${dir}/**/*.ts`], {
    cwd: root,
    context: root,
    tsconfig,
    transform: false,
    skipDynamicImports: false,
    onProgress: () => {}
  })
  const rel = (id: string): string => path.relative(root, path.resolve(root, id)).split(path.sep).join('/')
  const files = new Map<string, Set<string>>()
  const outside: Array<[string, string]> = []
  for (const [id, deps] of Object.entries(tree)) {
    const from = rel(id)
    if (!from.startsWith(`${dir}/`)) continue
    const to = new Set<string>()
    for (const d of deps ?? []) {
      if (d.id === null) continue
      const target = rel(d.id)
      if (target.startsWith(`${dir}/`)) to.add(target)
      else if (target.includes('/') && !target.startsWith('..') && !target.split('/').includes('node_modules')) outside.push([from, target])
    }
    files.set(from, to)
  }
  const cycles = parseCircular(tree, false).map((c) => c.map(rel))
  return { files, outside, cycles }
}

/** The module a file belongs to: its first folder under `dir` (`src/proxy`), or the file itself (`src/cli.ts`). */
export function moduleOf (file: string, dir: string): string {
  const rest = file.slice(dir.length + 1)
  const slash = rest.indexOf('/')
  return slash < 0 ? file : `${dir}/${rest.slice(0, slash)}`
}

/** The graph collapsed to modules (no self-arrows): module → modules it imports. */
export function moduleGraph (g: ImportGraph, dir: string): Map<string, Set<string>> {
  const m = new Map<string, Set<string>>()
  for (const [from, to] of g.files) {
    const a = moduleOf(from, dir)
    let set = m.get(a)
    if (set === undefined) { set = new Set(); m.set(a, set) }
    for (const t of to) {
      const b = moduleOf(t, dir)
      if (b !== a) set.add(b)
    }
  }
  return m
}

/** The strongly connected components of more than one node (Tarjan): each is a set of nodes in a cycle. */
export function cyclicGroups (graph: Map<string, Set<string>>): string[][] {
  let next = 0
  const index = new Map<string, number>()
  const low = new Map<string, number>()
  const stack: string[] = []
  const onStack = new Set<string>()
  const groups: string[][] = []
  const visit = (v: string): void => {
    index.set(v, next); low.set(v, next); next++
    stack.push(v); onStack.add(v)
    for (const w of graph.get(v) ?? []) {
      if (!index.has(w)) { visit(w); low.set(v, Math.min(low.get(v)!, low.get(w)!)) } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!))
    }
    if (low.get(v) === index.get(v)) {
      const group: string[] = []
      let w: string
      do { w = stack.pop()!; onStack.delete(w); group.push(w) } while (w !== v)
      if (group.length > 1) groups.push(group.sort())
    }
  }
  for (const v of [...graph.keys()].sort()) if (!index.has(v)) visit(v)
  return groups
}

/**
 * Every arrow into a file whose module is in `to`, from a file that a file whose module is in `from` reaches
 * (through any module in between), each as the chain of files from the data path to it: one chain per arrow.
 */
export function forbiddenPaths (g: ImportGraph, dir: string, from: readonly string[], to: readonly string[]): string[][] {
  const inSet = (file: string, set: readonly string[]): boolean => set.includes(moduleOf(file, dir))
  const found: string[][] = []
  const prev = new Map<string, string | null>()
  const queue: string[] = []
  for (const f of [...g.files.keys()].sort()) if (inSet(f, from)) { prev.set(f, null); queue.push(f) }
  while (queue.length > 0) {
    const f = queue.shift()!
    for (const t of [...(g.files.get(f) ?? [])].sort()) {
      if (inSet(t, to)) {
        const chain: string[] = [t]
        for (let c: string | null = f; c !== null; c = prev.get(c) ?? null) chain.unshift(c)
        found.push(chain)
        continue
      }
      if (prev.has(t)) continue
      prev.set(t, f)
      queue.push(t)
    }
  }
  return found
}

/** The installed version of a package, read from its package.json (which `exports` may hide from require). */
import { readFileSync } from "node:fs"
import { createRequire } from "node:module"
import { dirname, join } from "node:path"

export const installedVersion = (packageName: string): string => {
  let dir = dirname(createRequire(import.meta.url).resolve(packageName))
  for (;;) {
    try {
      const json = JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: string; version?: string }
      if (json.name === packageName && json.version !== undefined) return json.version
    } catch {
      // no package.json here; keep walking up
    }
    const parent = dirname(dir)
    if (parent === dir) throw new Error(`cannot find the package.json of ${packageName}`)
    dir = parent
  }
}

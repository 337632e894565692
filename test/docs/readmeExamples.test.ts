// The README's handler and migration examples are code a reader copies: they must
// compile, as written, against this repository's `skiplock` (strict, the
// repository's compiler options, except that an example may leave a local
// unused). Only `BankLive`, which the example leaves to the reader, is declared here.
import { readFileSync } from "node:fs"
import { resolve } from "node:path"
import ts from "typescript"
import { describe, expect, it } from "vitest"

const root = resolve(import.meta.dirname, "..", "..")

/** The first ```ts block after the given text (a heading, or the start of a paragraph). */
const exampleAfter = (readme: string, heading: string): string => {
  const section = readme.indexOf(`\n${heading}`)
  if (section < 0) throw new Error(`README has no "${heading}"`)
  const start = readme.indexOf("```ts\n", section)
  const end = readme.indexOf("\n```", start)
  if (start < 0 || end < 0) throw new Error(`README's "${heading}" section has no \`\`\`ts block`)
  return readme.slice(start + "```ts\n".length, end + 1)
}

/** Type-checks one file as if it sat at the repository's root, with `skiplock` resolving to src/. */
const typeErrors = (fileName: string, text: string): Array<string> => {
  const config = ts.getParsedCommandLineOfConfigFile(resolve(root, "tsconfig.json"), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })
  if (config === undefined) throw new Error("tsconfig.json could not be read")
  const path = resolve(root, fileName)
  const host = ts.createCompilerHost(config.options)
  const readFile = host.readFile.bind(host)
  host.readFile = (name) => (resolve(name) === path ? text : readFile(name))
  host.fileExists = ((exists) => (name: string) => resolve(name) === path || exists(name))(host.fileExists.bind(host))
  const program = ts.createProgram({ rootNames: [path], options: { ...config.options, noUnusedLocals: false, paths: { skiplock: ["./src/index.ts"] }, baseUrl: root }, host })
  return ts
    .getPreEmitDiagnostics(program)
    .filter((diagnostic) => diagnostic.file === undefined || resolve(diagnostic.file.fileName) === path)
    .map((diagnostic) => ts.flattenDiagnosticMessageText(diagnostic.messageText, "\n"))
}

describe("the README's examples", () => {
  it("the handler example in \"Writing a handler\" compiles as written", () => {
    const example = exampleAfter(readFileSync(resolve(root, "README.md"), "utf8"), "## Writing a handler")
    const marker = "// A worker for it."
    expect(example).toContain(marker)
    const withBankLive = example.replace(marker, `declare const BankLive: Layer.Layer<Bank>\n${marker}`)
    expect(typeErrors("readme-handler-example.ts", withBankLive)).toEqual([])
  }, 120_000)

  it("the migration example for a service of your own compiles as written", () => {
    const example = exampleAfter(readFileSync(resolve(root, "README.md"), "utf8"), "**In a service of your own**")
    expect(example).toContain("Migrator.pending(sets)")
    expect(typeErrors("readme-migration-example.ts", example)).toEqual([])
  }, 120_000)

  it("the example in \"Jobs by hand, from code\" compiles as written", () => {
    const example = exampleAfter(readFileSync(resolve(root, "README.md"), "utf8"), "### Jobs by hand, from code")
    expect(example).toContain("Jobs.retry(")
    expect(typeErrors("readme-jobs-example.ts", example)).toEqual([])
  }, 120_000)
})

// Running the real service as a child process (as `npm start` does) and
// talking to it over HTTP: a scoped resource, killed if a test leaves it running.
import { Duration, Effect, Scope } from "effect"
import { spawn, type ChildProcess } from "node:child_process"
import { createServer } from "node:net"
import { dirname, join, resolve } from "node:path"
import { fileURLToPath } from "node:url"

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..")
/** The test-only handlers (sepa_export, test_sleep), loaded through SKIPLOCK_HANDLER_MODULES. */
export const FIXTURE_HANDLERS = join(ROOT, "test", "service", "fixtures", "handlers.ts")
/** The runbook's organization placeholder 'org-uuid', as a real UUID. */
export const ORG = "3f2c1e4a-9b7d-4c2e-8f1a-0d6b5e4c3a21"

export const freePort = Effect.async<number>((resume) => {
  const server = createServer()
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface RunningProcess {
  readonly child: ChildProcess
  /** stdout and stderr lines so far. */
  readonly lines: Array<string>
  /** The JSON log lines parsed (LOG_FORMAT=json). */
  readonly logs: () => ReadonlyArray<{ readonly message: string; readonly logLevel: string; readonly annotations: Record<string, unknown> }>
  readonly exited: Promise<Exited>
  readonly output: () => string
}

/** The environment of the test process without the variables the service reads (so each test sets its own). */
export const cleanEnv = (): NodeJS.ProcessEnv => {
  const env = { ...process.env }
  for (const name of Object.keys(env)) {
    if (/^(DATABASE_URL|PORT|HOST|WORKER_.*|LOG_.*|SKIPLOCK_.*)$/.test(name)) delete env[name]
  }
  return env
}

/**
 * Spawns a command in the repository; killed with SIGKILL when the scope closes if still running.
 * With `ownProcessGroup`, as a terminal's foreground job: the whole group can be signalled (Ctrl-C).
 */
export const spawnScoped = (command: string, args: ReadonlyArray<string>, env: NodeJS.ProcessEnv, options: { readonly ownProcessGroup?: boolean } = {}) =>
  Effect.acquireRelease(
    Effect.sync((): RunningProcess => {
      const child = spawn(command, args, { cwd: ROOT, env, stdio: ["ignore", "pipe", "pipe"], detached: options.ownProcessGroup === true })
      const lines: Array<string> = []
      const collect = (chunk: Buffer) => lines.push(...chunk.toString("utf8").split("\n").filter((line) => line !== ""))
      child.stdout!.on("data", collect)
      child.stderr!.on("data", collect)
      const exited = new Promise<Exited>((resolveExit) => child.once("exit", (code, signal) => resolveExit({ code, signal })))
      return {
        child,
        lines,
        exited,
        output: () => lines.join("\n"),
        logs: () =>
          lines.flatMap((line) => {
            try {
              const parsed = JSON.parse(line)
              return typeof parsed === "object" && parsed !== null && "message" in parsed ? [parsed] : []
            } catch {
              return []
            }
          })
      }
    }),
    (running) =>
      Effect.promise(async () => {
        if (running.child.exitCode === null && running.child.signalCode === null) {
          running.child.kill("SIGKILL")
          await running.exited
        }
      })
  )

/** `node --import tsx src/main.ts` with the given variables (plus LOG_FORMAT=json). */
export const startService = (env: Record<string, string>): Effect.Effect<RunningProcess, never, Scope.Scope> =>
  spawnScoped(process.execPath, ["--import", "tsx", "src/main.ts"], { ...cleanEnv(), LOG_FORMAT: "json", ...env })

/** Waits for the process to exit, failing the test after `timeout`. */
export const waitForExit = (running: RunningProcess, timeout: Duration.DurationInput = "30 seconds") =>
  Effect.promise(() => running.exited).pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new Error(`the process did not exit within ${Duration.format(timeout)}; output:\n${running.output()}`)
    }),
    Effect.orDie
  )

/** Polls until `check` returns a value (not undefined), failing with the service's output after `timeout`. */
export const waitUntil = <A, E, R>(
  description: string,
  check: Effect.Effect<A | undefined, E, R>,
  running: RunningProcess,
  timeout: Duration.DurationInput = "30 seconds"
) =>
  Effect.gen(function* () {
    const deadline = Date.now() + Duration.toMillis(Duration.decode(timeout))
    while (true) {
      const value = yield* check
      if (value !== undefined) return value
      if (Date.now() > deadline) {
        return yield* Effect.dieMessage(`timed out waiting until ${description}; service output:\n${running.output()}`)
      }
      if (running.child.exitCode !== null) {
        return yield* Effect.dieMessage(`the service exited (${running.child.exitCode}) while waiting until ${description}; output:\n${running.output()}`)
      }
      yield* Effect.sleep("100 millis")
    }
  })

export interface HttpResult {
  readonly status: number
  readonly body: string
  readonly contentType: string | null
}

/** GET on the service; undefined when nothing answers (yet). */
export const get = (port: number, path: string) =>
  Effect.promise(async (): Promise<HttpResult | undefined> => {
    try {
      const response = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(5000) })
      return { status: response.status, body: await response.text(), contentType: response.headers.get("content-type") }
    } catch {
      return undefined
    }
  })

/** Waits until /readyz answers 200. */
export const waitForReady = (running: RunningProcess, port: number, timeout: Duration.DurationInput = "60 seconds") =>
  waitUntil("/readyz answers 200", Effect.map(get(port, "/readyz"), (result) => (result?.status === 200 ? result : undefined)), running, timeout)

/** One sample's value from a Prometheus text body, by metric name and exact labels. */
export const sample = (body: string, name: string, labels: Record<string, string> = {}): number | undefined => {
  const rendered = Object.entries(labels).map(([key, value]) => `${key}="${value}"`).join(",")
  const prefix = rendered === "" ? `${name} ` : `${name}{${rendered}} `
  const line = body.split("\n").find((l) => l.startsWith(prefix))
  return line === undefined ? undefined : Number(line.slice(prefix.length))
}

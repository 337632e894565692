/**
 * The application's job types: the handlers the service's worker runs, the
 * definitions that check payloads when the CLI or the Promise facade enqueue,
 * and the migration sets the database needs. Feature modules plug in here and
 * nowhere else; the runtime core knows nothing of them.
 */
import type { SqlClient } from "@effect/sql"
import type { SqlError } from "@effect/sql/SqlError"
import type { PgClient } from "@effect/sql-pg"
import { Effect, Layer } from "effect"
import { isAbsolute, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import type { Audit } from "../Audit.js"
import { billingDataChecks, billingHandlers, billingMigrations } from "../billing/index.js"
import type { Handler } from "../Handler.js"
import type { JobDefinition } from "../JobDefinition.js"
import type { JobQueue } from "../JobQueue.js"
import { coreMigrations } from "../Migrator.js"
import { errorText } from "../internal/describe.js"
import { StartupError } from "./StartupError.js"

/** What the service gives every handler: the database, the audit trail, and the queue for follow-up jobs. */
export type AppRequirements = SqlClient.SqlClient | PgClient.PgClient | Audit | JobQueue
export type AppHandler = Handler<string, any, any, AppRequirements>

// ─── Feature modules plug in here ────────────────────────────────────────────
// A feature adds its migration folder (applied after the core's, in this order),
// its handlers, its data checks (see DataCheck), and in FeatureServices any layer
// its handlers need beyond AppRequirements. Its CLI commands mount in src/cli/commands.ts.
const featureMigrations: ReadonlyArray<string> = [billingMigrations]
const featureDataChecks: ReadonlyArray<DataCheck> = [...billingDataChecks]
const featureHandlers: ReadonlyArray<AppHandler> = [...billingHandlers]
/** Provides what the feature handlers need beyond AppRequirements. */
export const FeatureServices: Layer.Layer<never, never, AppRequirements> = Layer.empty
// ─────────────────────────────────────────────────────────────────────────────

/**
 * A check of stored data that a feature's migrations could not settle (a constraint left NOT VALID over
 * rows stored before it): what an operator should fix, one line each, or nothing. Run after migrating
 * and at every start; cheap (no table scans).
 */
export type DataCheck = Effect.Effect<ReadonlyArray<string>, SqlError, SqlClient.SqlClient>

/** Every feature's data checks, their findings in one list. */
export const checkData: DataCheck = Effect.map(
  Effect.all(featureDataChecks),
  (findings) => findings.flat()
)

/** Migration sets in the order they apply: the core first. */
export const migrationSets: ReadonlyArray<string> = [coreMigrations, ...featureMigrations]

export interface AppJobs {
  readonly handlers: ReadonlyArray<AppHandler>
  readonly definitions: ReadonlyArray<JobDefinition>
  readonly migrationSets: ReadonlyArray<string>
}

const isHandler = (value: unknown): value is AppHandler =>
  typeof value === "object" && value !== null &&
  typeof (value as AppHandler).run === "function" &&
  typeof (value as AppHandler).definition?.jobType === "string"

const moduleUrl = (specifier: string) =>
  specifier.startsWith(".") || isAbsolute(specifier) ? pathToFileURL(resolve(process.cwd(), specifier)).href : specifier

/**
 * Loads one SKIPLOCK_HANDLER_MODULES entry: a module that exports
 * `handlers`, an array made with `Handler.make`, needing at most AppRequirements.
 */
const loadModule = (specifier: string) =>
  Effect.gen(function* () {
    const module = yield* Effect.tryPromise({
      try: () => import(moduleUrl(specifier)) as Promise<{ handlers?: unknown }>,
      catch: (cause) => new StartupError({ message: `SKIPLOCK_HANDLER_MODULES: cannot load ${specifier}: ${errorText(cause)}`, cause })
    })
    const handlers = module.handlers
    if (!Array.isArray(handlers) || !handlers.every(isHandler)) {
      return yield* new StartupError({
        message: `SKIPLOCK_HANDLER_MODULES: ${specifier} must export \`handlers\`, an array of handlers made with Handler.make`
      })
    }
    return handlers as ReadonlyArray<AppHandler>
  })

/** The application's handlers plus those of the given extra modules; two handlers for one type stop start-up. */
export const load = (handlerModules: ReadonlyArray<string>): Effect.Effect<AppJobs, StartupError> =>
  Effect.gen(function* () {
    const origins = new Map<string, string>()
    const handlers: Array<AppHandler> = []
    const add = (handler: AppHandler, origin: string) => {
      const type = handler.definition.jobType
      const previous = origins.get(type)
      if (previous !== undefined) {
        return new StartupError({ message: `job type "${type}" has two handlers: one from ${previous}, one from ${origin}` })
      }
      origins.set(type, origin)
      handlers.push(handler)
      return undefined
    }
    for (const handler of featureHandlers) {
      const conflict = add(handler, "the application")
      if (conflict) return yield* conflict
    }
    for (const specifier of handlerModules) {
      for (const handler of yield* loadModule(specifier)) {
        const conflict = add(handler, specifier)
        if (conflict) return yield* conflict
      }
    }
    return { handlers, definitions: handlers.map((handler) => handler.definition), migrationSets }
  })

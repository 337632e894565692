/**
 * Named prepared statements for skiplock's own statements. @effect/sql-pg
 * sends every statement unnamed, so the server parses and plans it on every
 * call; a statement whose text begins with PREPARED is sent under a name
 * instead, which node-postgres parses once per connection and then only
 * executes (in a drain the server spent 8–14 % less CPU a job:
 * docs/PERFORMANCE.md). Only skiplock's fixed job-path statements carry the
 * mark: their texts never vary and they select named columns.
 *
 * A migration that changes the columns a prepared statement returns makes the
 * server refuse it ("cached plan must not change result type") on every
 * connection that prepared it. Such a statement gets a new name on that
 * connection and, outside a transaction, is sent again at once; inside one
 * the error stands (the transaction is already aborted) and the next call
 * prepares it anew.
 */
import pg from "pg"

/** The mark a statement's text begins with to be prepared. */
export const PREPARED = "/* skiplock:prepared */"

// Names are shared by all connections (each prepares its own); past this many texts the rest go unnamed.
const MAX_TEXTS = 100
const names = new Map<string, string>()

const nameFor = (text: string): string | undefined => {
  let name = names.get(text)
  if (name === undefined && names.size < MAX_TEXTS) {
    name = `skiplock_${names.size + 1}`
    names.set(text, name)
  }
  return name
}

const isStalePlan = (error: unknown) =>
  (error as { code?: unknown } | null)?.code === "0A000" && /cached plan must not change result type/.test(String((error as Error).message))

type Callback = (error: Error | null, result: unknown) => void

/** A `pg` Client (for `pg.Pool`'s `Client` option) that sends statements marked PREPARED as named prepared statements. */
export class PreparingClient extends pg.Client {
  // A statement refused as stale gets a fresh name on this connection; the old one is left to the connection's end.
  private readonly renamed = new Map<string, string>()
  private renames = 0

  // pg's query is overloaded (text, config object, cursor, promise or callback); every other form passes through.
  override query(config: any, values?: any, callback?: any): any {
    const name = typeof config === "string" && config.startsWith(PREPARED) && typeof callback === "function" ? nameFor(config) : undefined
    if (name === undefined) return super.query(config, values, callback)
    const text: string = config
    const send = (retried: boolean): void => {
      const current = this.renamed.get(text) ?? name
      super.query({ name: current, text, values }, (error: Error | null, result: unknown) => {
        if (error !== null && isStalePlan(error)) {
          this.renamed.set(text, `${name}_${++this.renames}`)
          if (!retried && this.transactionStatus() === "I") return send(true)
        }
        ;(callback as Callback)(error, result)
      })
    }
    send(false)
  }

  // node-postgres tracks it from ReadyForQuery ("I" idle, "T" in a transaction, "E" in a failed one); @types/pg lacks it.
  private transactionStatus(): string | null {
    return (this as unknown as { getTransactionStatus(): string | null }).getTransactionStatus()
  }
}

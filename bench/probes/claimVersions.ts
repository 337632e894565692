/**
 * The claims the claim probes put side by side, each set up whole on a database migrated to the
 * latest version: its runnable index and its claim_next_job, taken from the migration files.
 */
import { readFileSync } from "node:fs"

const migration = (file: string) => readFileSync(new URL(`../../migrations/core/${file}`, import.meta.url), "utf8")
const from0037 = migration("0037_claims_read_only_the_types_they_take.sql")

export interface ClaimVersion {
  readonly key: string
  readonly name: string
  readonly sql: string
}

export const claimVersions: ReadonlyArray<ClaimVersion> = [
  {
    // 0037's index with 0038's claim, and the type its candidates carry, made anew each time.
    key: "0038",
    name: "as migrated (0038)",
    sql: `DROP TYPE IF EXISTS job_claim_position; ${from0037}
          ${migration("0038_a_claim_of_several_types_looks_on_from_where_it_ended.sql")}`
  },
  { key: "0037", name: "0037", sql: from0037 },
  { key: "0024", name: "single walk (0024)", sql: migration("0024_claims_in_enqueue_order.sql") }
]

/** The versions a `--versions 0038,0024` flag names, in its order. */
export const claimVersionsNamed = (keys: string): ReadonlyArray<ClaimVersion> =>
  keys.split(",").map((key) => {
    const version = claimVersions.find((candidate) => candidate.key === key)
    if (version === undefined) {
      throw new Error(`--versions: unknown version ${key} (known: ${claimVersions.map((v) => v.key).join(", ")})`)
    }
    return version
  })

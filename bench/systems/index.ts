/** The systems under test, in the order they run in a round (reversed every other round: scenarios/common.ts roundOrder). */
import type { BenchConfig } from "../config.js"
import { graphileWorker, graphileWorkerLocalQueue } from "./graphile-worker.js"
import { makePgBoss } from "./pg-boss.js"
import { skiplock, skiplockNoHandOff, skiplockPrefetch, skiplockPrefetch20 } from "./skiplock.js"
import type { SystemAdapter } from "./types.js"

export const allSystems = (config: BenchConfig): Array<SystemAdapter> => [
  skiplock,
  skiplockNoHandOff,
  skiplockPrefetch,
  skiplockPrefetch20,
  graphileWorker,
  graphileWorkerLocalQueue,
  makePgBoss(false),
  makePgBoss(true, config.bossBatchSize)
]

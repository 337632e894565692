/**
 * Time-ordered job ids (UUID version 7, RFC 9562): 48 bits of Unix
 * milliseconds, then randomness. A job's id is the key of job_queue and
 * job_runs and leads audit_logs' job index; ids that grow with time put every
 * new entry at the right edge of those indexes, where random (v4) ids
 * scattered them over an index as large as the whole history.
 * Ids made in one process also increase within a millisecond (a 12-bit
 * counter after the time, RFC 9562 method 1), so a batch's ids are in order.
 */
import { randomFillSync } from "node:crypto"

let lastMillis = -1
let sequence = 0
// Random bytes are drawn from the OS in blocks: one call per id cost more than the rest of an enqueue's preparation.
const RANDOM_PER_ID = 8
const randomPool = new Uint8Array(RANDOM_PER_ID * 512)
let poolOffset = randomPool.length
const hex = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, "0"))

/** A UUIDv7 for the time `millis` (ms since the epoch); never smaller than the previous one from this process. */
export const uuidv7 = (millis: number): string => {
  let time = Math.max(Math.floor(millis), 0)
  if (time <= lastMillis) {
    time = lastMillis
    if (++sequence > 0xfff) {
      // 4,096 ids in one millisecond: borrow the next one
      time = ++lastMillis
      sequence = 0
    }
  } else {
    lastMillis = time
    sequence = 0
  }
  if (poolOffset === randomPool.length) {
    randomFillSync(randomPool)
    poolOffset = 0
  }
  const random = randomPool.subarray(poolOffset, (poolOffset += RANDOM_PER_ID))
  const bytes = new Uint8Array(16)
  for (let i = 5; i >= 0; i--) {
    bytes[i] = time % 256
    time = Math.floor(time / 256)
  }
  bytes[6] = 0x70 | (sequence >> 8) // version 7, counter high bits
  bytes[7] = sequence & 0xff
  bytes[8] = 0x80 | (random[0]! & 0x3f) // variant 10
  for (let i = 9; i < 16; i++) bytes[i] = random[i - 8]!
  let text = ""
  for (let i = 0; i < 16; i++) {
    text += hex[bytes[i]!]
    if (i === 3 || i === 5 || i === 7 || i === 9) text += "-"
  }
  return text
}

/** The milliseconds a UUIDv7 carries. */
export const uuidv7Millis = (id: string): number => parseInt(id.replace(/-/g, "").slice(0, 12), 16)

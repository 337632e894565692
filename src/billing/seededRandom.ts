/**
 * A small seeded pseudo-random generator (mulberry32): the same seed gives the same sequence on every
 * machine. The demo data is made with it, and the randomized tests that must reproduce run on it.
 */

export interface Random {
  /** A float in [0, 1). */
  readonly next: () => number
  /** An integer in [min, max]. */
  readonly int: (min: number, max: number) => number
  readonly chance: (probability: number) => boolean
  readonly pick: <A>(items: ReadonlyArray<A>) => A
  /** One of the choices, each as likely as its weight. */
  readonly weighted: <A>(choices: ReadonlyArray<readonly [number, A]>) => A
  /** Up to `max` distinct items, in random order. */
  readonly some: <A>(items: ReadonlyArray<A>, max: number) => ReadonlyArray<A>
}

export const seededRandom = (seed: number): Random => {
  let state = seed >>> 0
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  const pick = <A>(items: ReadonlyArray<A>): A => {
    if (items.length === 0) throw new Error("pick from an empty list")
    return items[Math.floor(next() * items.length)]!
  }
  return {
    next,
    int,
    chance: (probability) => next() < probability,
    pick,
    weighted: (choices) => {
      let left = next() * choices.reduce((sum, [weight]) => sum + weight, 0)
      for (const [weight, choice] of choices) {
        left -= weight
        if (left < 0) return choice
      }
      return choices[choices.length - 1]![1]
    },
    some: (items, max) => {
      const pool = [...items]
      const taken = []
      for (let n = int(0, Math.min(max, pool.length)); n > 0; n--) taken.push(pool.splice(int(0, pool.length - 1), 1)[0]!)
      return taken
    }
  }
}

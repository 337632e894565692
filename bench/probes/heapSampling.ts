/** What the allocation probes share: V8's sampling heap profiler around a piece of work. */
import type { Session } from "node:inspector/promises"

export interface ProfileNode {
  readonly callFrame: { readonly url: string }
  readonly selfSize: number
  readonly children: ReadonlyArray<ProfileNode>
}

/**
 * Samples what `work` allocates (a sample every `intervalBytes`), also what is collected meanwhile
 * by major collections and, with `keepCollectedByMinorGC`, by minor ones; `beforeStop` runs while
 * sampling is still on. Returns the profile's root.
 */
export const sampleAllocations = async (
  session: Session,
  options: { readonly intervalBytes: number; readonly keepCollectedByMinorGC: boolean },
  work: () => Promise<void>,
  beforeStop: () => void = () => {}
): Promise<ProfileNode> => {
  await session.post("HeapProfiler.startSampling", {
    samplingInterval: options.intervalBytes,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: options.keepCollectedByMinorGC
  } as never)
  await work()
  beforeStop()
  const { profile } = (await session.post("HeapProfiler.stopSampling")) as unknown as { profile: { head: ProfileNode } }
  return profile.head
}

/** Bytes in all of a profile's samples. */
export const totalSize = (node: ProfileNode): number => node.children.reduce((sum, child) => sum + totalSize(child), node.selfSize)

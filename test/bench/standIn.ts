// A system for the harness's own tests: it runs nothing but what `open` gives it, in process.
import type { SystemAdapter } from "../../bench/systems/types.js"

export const standInSystem = (id: string, open: SystemAdapter["open"]): SystemAdapter => ({
  id,
  label: id,
  packageName: id,
  configuration: "in-process stand-in",
  recordsPerJob: "nothing",
  idlePollMs: 0,
  probe: async () => ({ ok: true, version: "0" }),
  install: async () => {},
  open,
  unfinishedCount: async () => 0,
  discardUnfinished: async () => {},
  seedHistory: async () => {},
  isClaimQuery: () => false
})

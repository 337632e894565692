// Every test file talks to a real PostgreSQL: globalSetup finds (or starts) one
// server per run, and each file gets its own fresh database via TestDatabase.
import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    globalSetup: ["./test/globalSetup.ts"],
    pool: "forks",
    poolOptions: { forks: { minForks: 1, maxForks: 2 } },
    hookTimeout: 60_000,
    testTimeout: 60_000,
    teardownTimeout: 30_000,
    exclude: ["**/node_modules/**", "**/dist/**", "**/.data/**"]
  }
})

#!/usr/bin/env node
// `npx skiplock <command>`: the operator CLI (src/cli/main.ts), run from its
// TypeScript sources through tsx's loader, as `npm start` runs the service.
import { register } from "tsx/esm/api"

register()
await import("../src/cli/main.ts")

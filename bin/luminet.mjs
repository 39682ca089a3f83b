#!/usr/bin/env node
// The `luminet` command: loads the TypeScript CLI through tsx so `npx luminet` works right after `npm ci`.
import { register } from "tsx/esm/api";

register();
await import("../cli/main.ts");

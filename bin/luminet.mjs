#!/usr/bin/env node
// The `luminet` command: loads the TypeScript CLI through tsx so `npx luminet` works right after `npm ci`.
// The package's own tsconfig (the dashboard's JSX settings), not one tsx would look for from the working
// directory: `luminet` runs from any folder.
import { fileURLToPath } from "node:url";
import { register } from "tsx/esm/api";

register({ tsconfig: fileURLToPath(new URL("../tsconfig.json", import.meta.url)) });
await import("../cli/main.ts");

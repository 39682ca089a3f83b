// Structured logs (pino) for every role. Secrets never reach a log line: the redact list covers the
// places a key or password could appear, and callers log key prefixes, never keys.
import pino from "pino";

export const logger = pino({
  level: process.env.LOG_LEVEL ?? "info",
  redact: {
    paths: [
      "apiKey",
      "*.apiKey",
      "authorization",
      "*.authorization",
      "headers.authorization",
      "password",
      "*.password",
      "databaseUrl",
      "*.databaseUrl",
    ],
    censor: "[redacted]",
  },
});

export type Logger = typeof logger;

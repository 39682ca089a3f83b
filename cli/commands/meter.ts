// `luminet meter`: usage events from NATS (NATS_URL) into billing rows in Postgres (DATABASE_URL), exactly
// once. SIGTERM or SIGINT drains it: no more events are taken, those taken are written and acked, then it
// exits 0. Run `luminet migrate` first; base prices live in base_models. With --metrics-port it serves its
// series (meter/metrics.ts) and probes: /readyz is 503 while the database refuses its batches.
import type { Command } from "commander";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { logger } from "../../core/logger.ts";
import { listeningPort, serveMetrics } from "../../core/metrics-server.ts";
import { requireMigrated } from "../../db/migrate.ts";
import { describeDatabaseUrl, openDb } from "../../db/open.ts";
import { startMeter } from "../../meter/meter.ts";
import { MeterMetrics } from "../../meter/metrics.ts";
import { count, port } from "../flags.ts";
import { CliError } from "../run-command.ts";
import { serviceAction, stopOnSignal } from "../service.ts";

interface MeterFlags {
  namespace?: string;
  batchSize: string;
  flushMs: string;
  ackWaitMs: string;
  metricsPort?: string;
}

async function runMeter(flags: MeterFlags): Promise<void> {
  const servers = process.env.NATS_URL;
  if (!servers) throw new CliError("NATS_URL is not set: point it at a NATS server with JetStream");
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) throw new CliError("DATABASE_URL is not set: the meter writes billing rows to Postgres");
  const batchSize = count("--batch-size", flags.batchSize, 1);
  const flushMs = count("--flush-ms", flags.flushMs, 0);
  const usageAckWaitMs = count("--ack-wait-ms", flags.ackWaitMs, 100);
  const metricsPort = flags.metricsPort === undefined ? undefined : port("--metrics-port", flags.metricsPort);
  // The description names driver, host and database only: the URL itself may hold a password.
  const database = describeDatabaseUrl(databaseUrl);
  const db = await openDb(databaseUrl);
  await requireMigrated(db, database).catch(async (error: unknown) => {
    await db.close();
    throw error;
  });
  const bus = await connectJetStreamBus({
    servers,
    usageAckWaitMs,
    connectionName: "luminet-meter",
    ...(flags.namespace ? { namespace: flags.namespace } : {}),
  }).catch(async (error: unknown) => {
    await db.close();
    throw error;
  });
  const metrics = metricsPort === undefined ? undefined : new MeterMetrics();
  const meter = await startMeter({
    bus,
    db,
    batchSize,
    flushMs,
    logger,
    ...(metrics ? { metrics } : {}),
  }).catch(async (error: unknown) => {
    await Promise.all([bus.close(), db.close()]);
    throw error;
  });
  const server =
    metrics && metricsPort !== undefined
      ? await serveMetrics(metrics.registry, metricsPort, "0.0.0.0", () => meter.problem()).catch(
          async (error: unknown) => {
            await meter.stop();
            await Promise.all([bus.close(), db.close()]);
            throw error;
          },
        )
      : null;
  logger.info(
    {
      database,
      namespace: flags.namespace ?? null,
      batchSize,
      metricsPort: server ? listeningPort(server) : undefined,
    },
    "meter started",
  );
  await stopOnSignal("draining", async () => {
    // /readyz answers 503 while it drains; the server closes last.
    await meter.stop();
    await bus.close();
    await db.close();
    if (server) await new Promise((resolve) => server.close(resolve));
  });
  logger.info("meter stopped");
}

export function registerMeter(program: Command): void {
  program
    .command("meter")
    .description("turn usage events into billing rows in Postgres, exactly once (NATS_URL, DATABASE_URL)")
    .option(
      "--namespace <ns>",
      "prefix of every NATS subject, stream and bucket (LUMINET_NAMESPACE)",
      process.env.LUMINET_NAMESPACE,
    )
    .option("--batch-size <n>", "most usage events written per transaction", "32")
    .option("--flush-ms <ms>", "how long a lone event waits for others to share its transaction", "100")
    .option("--ack-wait-ms <ms>", "how long an unacked usage event stays with a silent meter", "30000")
    .option(
      "--metrics-port <port>",
      "serve /metrics, /healthz and /readyz on this port (0: any free port, logged)",
    )
    .action(serviceAction(runMeter));
}

// `luminet meter`: usage events from NATS (NATS_URL) into billing rows in Postgres (DATABASE_URL), exactly
// once. SIGTERM or SIGINT drains it: no more events are taken, those taken are written and acked, then it
// exits 0. Run `luminet migrate` first; base prices live in base_models.
import type { Command } from "commander";
import { connectJetStreamBus } from "../../bus/jetstream.ts";
import { logger } from "../../core/logger.ts";
import { requireMigrated } from "../../db/migrate.ts";
import { describeDatabaseUrl, openDb } from "../../db/open.ts";
import { startMeter } from "../../meter/meter.ts";
import { count } from "../flags.ts";
import { CliError } from "../run-command.ts";
import { serviceAction, stopOnSignal } from "../service.ts";

interface MeterFlags {
  namespace?: string;
  batchSize: string;
  flushMs: string;
  ackWaitMs: string;
}

async function runMeter(flags: MeterFlags): Promise<void> {
  const servers = process.env.NATS_URL;
  if (!servers) throw new CliError("NATS_URL is not set: point it at a NATS server with JetStream");
  const databaseUrl = process.env.DATABASE_URL;
  if (!databaseUrl) throw new CliError("DATABASE_URL is not set: the meter writes billing rows to Postgres");
  const batchSize = count("--batch-size", flags.batchSize, 1);
  const flushMs = count("--flush-ms", flags.flushMs, 0);
  const usageAckWaitMs = count("--ack-wait-ms", flags.ackWaitMs, 100);
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
  const meter = await startMeter({ bus, db, batchSize, flushMs, logger }).catch(async (error: unknown) => {
    await Promise.all([bus.close(), db.close()]);
    throw error;
  });
  logger.info({ database, namespace: flags.namespace ?? null, batchSize }, "meter started");
  await stopOnSignal("draining", async () => {
    await meter.stop();
    await bus.close();
    await db.close();
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
    .action(serviceAction(runMeter));
}

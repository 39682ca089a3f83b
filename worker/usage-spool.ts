// A worker's usage events on its local disk until JetStream has stored them. A usage event is written here
// before its first publish and removed once the usage stream acknowledged it, so a worker killed while NATS
// is down (its events unstored, its requests already cut off from their gateway) loses no billing: the
// next worker process started on the same spool folder publishes what it finds there. Publishing twice is
// harmless: the request id is both the JetStream message id and the billing row's key.
//
// One file per event, written to a temporary name and renamed, so a crash leaves either the whole event or
// none of it. Written, not fsynced: the kernel keeps it through the process's death (what the spool is for);
// an fsync would survive the host's crash too but costs ~2 ms per request (0.5 ms without, measured on the
// CI machine), and a host lost in a NATS outage is a double failure we accept. A file that does not parse is moved aside (never deleted) and logged.
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { logger } from "../core/logger.ts";
import { decode, encode, UsageEvent } from "../schema/wire.ts";

const EVENT_SUFFIX = ".json";
const WRITING_SUFFIX = ".writing";
const ABANDONED_AFTER_MS = 60_000;
/** Where files that do not hold a usage event go, for an operator to look at. */
const UNREADABLE_SUFFIX = ".unreadable";

export class UsageSpool {
  private constructor(readonly dir: string) {}

  /**
   * Opens (creating it if need be) the spool folder. Half-written files of interrupted processes go; a write
   * takes milliseconds, so one older than a minute is nobody's.
   */
  static open(dir: string): UsageSpool {
    mkdirSync(dir, { recursive: true });
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      if (name.endsWith(WRITING_SUFFIX) && statSync(path).mtimeMs < Date.now() - ABANDONED_AFTER_MS) {
        rmSync(path, { force: true });
      }
    }
    return new UsageSpool(dir);
  }

  /** Writes the event to the spool; resolves once the file is in place. */
  async keep(event: UsageEvent): Promise<void> {
    const path = this.pathOf(event.request_id);
    const writing = `${path}.${process.pid}${WRITING_SUFFIX}`;
    await writeFile(writing, encode(UsageEvent, event));
    await rename(writing, path);
  }

  /** Removes the event of a request once it is stored elsewhere. */
  async forget(requestId: string): Promise<void> {
    await rm(this.pathOf(requestId), { force: true });
  }

  /** The events on disk: those an earlier process kept and never saw stored, or this one's in flight. */
  held(): UsageEvent[] {
    const events: UsageEvent[] = [];
    for (const name of readdirSync(this.dir)) {
      if (!name.endsWith(EVENT_SUFFIX)) continue;
      const path = join(this.dir, name);
      try {
        events.push(decode(UsageEvent, readFileSync(path)));
      } catch (error) {
        renameSync(path, `${path}${UNREADABLE_SUFFIX}`);
        logger.error(
          { err: error, file: `${path}${UNREADABLE_SUFFIX}` },
          "a spooled usage event is unreadable; moved aside, not billed",
        );
      }
    }
    return events;
  }

  /** Request ids may hold any character: the file is named by their hash. */
  private pathOf(requestId: string): string {
    const hash = createHash("sha256").update(requestId).digest("hex").slice(0, 40);
    return join(this.dir, `${hash}${EVENT_SUFFIX}`);
  }
}

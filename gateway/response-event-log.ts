// The event log of a background response created with `stream: true` (schema/db.ts response_events): its
// creation writes response.created and response.queued; the batch runner that runs it, on any Node
// gateway, appends the run's events as they come; the creating request's stream and every
// `GET /v1/responses/{id}?stream=true&starting_after=N` replay the log from after N and follow it by
// polling the database until the response ends. A client that loses its connection resumes from the last
// sequence_number it saw, as with OpenAI's background streaming; the run goes on whoever listens.
import { and, asc, eq, gt, notInArray, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { responseEvents, storedResponses } from "../schema/db.ts";
import type { ResponseObject } from "../schema/responses-api.ts";
import type { NumberedEvent } from "./response-events.ts";

type Handle = Pick<Db, "insert" | "select" | "transaction">;

/** The events a response's stream ends with; a response that ends without one (cancelled, or failed before its run) ends its stream by its status. */
const FINAL_EVENTS = new Set(["response.completed", "response.incomplete", "response.failed"]);
const ENDED = new Set(["completed", "incomplete", "failed", "cancelled"]);

/** Writes a background response's first events, created then queued: sequence numbers 0 and 1. */
export async function startLog(db: Pick<Db, "insert">, queued: ResponseObject): Promise<void> {
  const first: NumberedEvent[] = [
    { type: "response.created", response: queued, sequence_number: 0 },
    { type: "response.queued", response: queued, sequence_number: 1 },
  ];
  await db.insert(responseEvents).values(first.map((event) => row(queued.id, event.sequence_number, event)));
}

function row(responseId: string, sequenceNumber: number, event: NumberedEvent) {
  return { responseId, sequenceNumber, event: { ...event, sequence_number: sequenceNumber } };
}

/** Whether the response was created with background and stream: only those have a log to stream. */
export async function hasLog(db: Pick<Db, "select">, responseId: string): Promise<boolean> {
  const rows = await db
    .select({ n: responseEvents.sequenceNumber })
    .from(responseEvents)
    .where(and(eq(responseEvents.responseId, responseId), eq(responseEvents.sequenceNumber, 0)));
  return rows.length > 0;
}

/** The events that say only where a response stands; any other in its log is its run's output. */
const STATUS_EVENTS = ["response.created", "response.queued", "response.in_progress"];

/**
 * Whether a run's output began reaching the response's log. Such a response is not run again: the rerun's
 * events would follow the first run's in the log, and a reader would see its text twice.
 */
export async function outputLogged(db: Pick<Db, "select">, responseId: string): Promise<boolean> {
  const rows = await db
    .select({ n: responseEvents.sequenceNumber })
    .from(responseEvents)
    .where(
      and(
        eq(responseEvents.responseId, responseId),
        notInArray(sql<string>`${responseEvents.event} ->> 'type'`, STATUS_EVENTS),
      ),
    )
    .limit(1);
  return rows.length > 0;
}

/**
 * What a background run's events go through: numbered after what the log holds (its creation's events, and
 * a run before this one that was handed back), its own response.created dropped (the response was created
 * when it was queued), and written a batch at a time (each `flushEveryMs`) so a token is one row but not
 * one round trip. A response cancelled meanwhile takes no more events: a write holds its row (FOR NO KEY
 * UPDATE), so a cancel waits for a write under way and a later write sees it. The final events go in with
 * the stored response, in one transaction (finish), so a reader that sees the response ended finds them.
 */
export class RunEventLog {
  #next = 0;
  #pending: ReturnType<typeof row>[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #writing: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(
    private readonly db: Handle,
    private readonly responseId: string,
    private readonly flushEveryMs = 100,
  ) {}

  /** Reads where the log ends; before the first push. */
  async open(): Promise<void> {
    const [last] = await this.db
      .select({ n: sql<number | null>`max(${responseEvents.sequenceNumber})` })
      .from(responseEvents)
      .where(eq(responseEvents.responseId, this.responseId));
    this.#next = last?.n === null || last?.n === undefined ? 0 : Number(last.n) + 1;
  }

  /** Events as the run makes them; once the log is finished or closed, none is taken. */
  push(events: readonly NumberedEvent[]): void {
    if (this.#closed) return;
    this.#pending.push(...this.#numbered(events));
    if (this.#pending.length > 0 && this.#timer === undefined) {
      this.#timer = setTimeout(() => {
        this.#timer = undefined;
        this.#flush();
      }, this.flushEveryMs);
    }
  }

  /**
   * Writes what is pending, then, in one transaction, `save` (which stores the ended response and says
   * whether it did: false when it was cancelled meanwhile) and the final events after it.
   */
  async finish(
    save: (tx: Pick<Db, "update" | "select" | "transaction">) => Promise<boolean>,
    finalEvents: readonly NumberedEvent[],
  ): Promise<boolean> {
    this.#stop();
    this.#flush();
    await this.#writing;
    const rows = this.#numbered(finalEvents);
    return this.db.transaction(async (tx) => {
      const saved = await save(tx);
      if (saved && rows.length > 0) await tx.insert(responseEvents).values(rows);
      return saved;
    });
  }

  /** Writes what is pending and takes no more (a run that failed: its stream ends by its status). */
  async close(): Promise<void> {
    this.#stop();
    this.#flush();
    await this.#writing;
  }

  #numbered(events: readonly NumberedEvent[]): ReturnType<typeof row>[] {
    return events
      .filter((event) => event.type !== "response.created")
      .map((event) => row(this.responseId, this.#next++, event));
  }

  #stop(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #flush(): void {
    const rows = this.#pending.splice(0);
    if (rows.length === 0) return;
    this.#writing = this.#writing.then(() => this.#write(rows));
    // A failed write is thrown by finish() or close(); until then it is not an unhandled rejection.
    this.#writing.catch(() => {});
  }

  async #write(rows: ReturnType<typeof row>[]): Promise<void> {
    await this.db.transaction(async (tx) => {
      const [held] = await tx
        .select({ status: sql<string>`${storedResponses.response} ->> 'status'` })
        .from(storedResponses)
        .where(eq(storedResponses.id, this.responseId))
        // Not FOR SHARE: the events' trigger then updates this row (event_bytes), and upgrading a share
        // lock another transaction also holds could deadlock.
        .for("no key update");
      if (!held || held.status === "cancelled") return;
      await tx.insert(responseEvents).values(rows);
    });
  }
}

export interface FollowOptions {
  /**
   * How long to wait after a read that brought something new, or the first that brought nothing; after
   * each further read that brought nothing, twice as long, up to ten times this. A response queued behind
   * others then costs each follower a read a second rather than ten.
   */
  pollMs: number;
  /** Set when the listener leaves: following stops at its next read. */
  stopped: () => boolean;
  /** Waits between reads (tests record them). */
  sleep?: (ms: number) => Promise<void>;
}

/** How many times pollMs a follower waits at most while nothing comes. */
const MAX_BACKOFF = 10;

/**
 * The response's events after `startingAfter`, then each new one as the run writes it, until its final
 * event; a response that ended without one (cancelled, failed before or outside its run) ends the stream
 * after what its log holds, a failed one with response.failed.
 */
export async function* followLog(
  db: Pick<Db, "select">,
  responseId: string,
  startingAfter: number,
  options: FollowOptions,
): AsyncGenerator<NumberedEvent> {
  let after = startingAfter;
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms)));
  /** Reads in a row that brought nothing new. */
  let quietReads = 0;
  while (!options.stopped()) {
    const { status, events } = await readFollowed(db, responseId, after);
    for (const numbered of events) {
      after = numbered.sequence_number;
      yield numbered;
      if (FINAL_EVENTS.has(numbered.type)) return;
    }
    if (events.length === READ_LIMIT) continue;
    // Deleted, or ended without a final event in its log.
    if (status === undefined) return;
    if (ENDED.has(status)) {
      if (status === "failed") {
        const [failed] = await db
          .select({ response: storedResponses.response })
          .from(storedResponses)
          .where(eq(storedResponses.id, responseId));
        if (failed) {
          const response = failed.response as ResponseObject;
          yield { type: "response.failed", response, sequence_number: after + 1 };
        }
      }
      return;
    }
    quietReads = events.length > 0 ? 0 : quietReads + 1;
    await sleep(options.pollMs * Math.min(2 ** Math.max(0, quietReads - 1), MAX_BACKOFF));
  }
}

/** The most events one read takes; a follower reads again at once after a full one. */
const READ_LIMIT = 500;

/**
 * The response's status (undefined once it is deleted) and its events after `after`, in one statement: a
 * statement reads one snapshot, so a status that says it ended comes with every event written before it
 * ended. Only the status of the response: its whole output is read once, where a failed one's stream ends.
 */
async function readFollowed(
  db: Pick<Db, "select">,
  responseId: string,
  after: number,
): Promise<{ status: string | undefined; events: NumberedEvent[] }> {
  const newEvents = db
    .select({ event: responseEvents.event, sequenceNumber: responseEvents.sequenceNumber })
    .from(responseEvents)
    .where(and(eq(responseEvents.responseId, responseId), gt(responseEvents.sequenceNumber, after)))
    .orderBy(asc(responseEvents.sequenceNumber))
    .limit(READ_LIMIT)
    .as("new_events");
  // One row with a null event where the log holds nothing new; no row where the response is gone.
  const rows = await db
    .select({ status: sql<string>`${storedResponses.response} ->> 'status'`, event: newEvents.event })
    .from(storedResponses)
    .leftJoin(newEvents, sql`true`)
    .where(eq(storedResponses.id, responseId))
    .orderBy(asc(newEvents.sequenceNumber));
  return {
    status: rows[0]?.status,
    events: rows.flatMap(({ event }) => (event === null ? [] : [event as NumberedEvent])),
  };
}

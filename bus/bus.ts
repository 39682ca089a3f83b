// The message bus every Luminet process talks through: the request queues, reply inboxes, cancels, usage
// events, worker heartbeats and adapter control events of DESIGN.md's "A request's path" and "Placement and
// routing". Two implementations keep the same semantics: bus/jetstream.ts (NATS JetStream, production) and
// bus/in-process.ts (one process, `luminet dev`); test/contract/ runs one suite against both.
import { logger } from "../core/logger.ts";
import type {
  AdapterControl,
  Cancel,
  InferenceRequest,
  Reply,
  ReplyClaim,
  UsageEvent,
  WorkerHeartbeat,
} from "../schema/wire.ts";

/** The broker's answer to a publish that carries a message id. */
export interface Published {
  /** True when a message with the same id was already accepted within the dedupe window; it was dropped. */
  duplicate: boolean;
}

/** A request publish's answer, with a way to take the request back off its queue. */
export interface QueuedRequest extends Published {
  /**
   * Removes the message from its queue: a copy that lost to another (ReplyInbox.openCopy), or a run that
   * ended before any worker claimed it, so that it stops counting in requestBacklog. A worker that pulled it
   * already is refused at its claim, as before; one that has not never sees it. Best effort: it never
   * rejects, and does nothing for a duplicate publish (the message is another publish's) or one acked.
   */
  withdraw(): Promise<void>;
}

/** A queued message handed to one consumer. It is that consumer's until acked, or until its ack wait passes. */
export interface Delivery<T> {
  readonly message: T;
  /** 1 on the first delivery; more when an earlier consumer neither acked nor finished in time. */
  readonly deliveryCount: number;
  /** Done: the message leaves the queue. Resolves once the broker has recorded it. */
  ack(): Promise<void>;
  /** Give it back to be delivered again, to any consumer, after `delayMs` (default at once). */
  nak(delayMs?: number): void;
  /** Still working on it: restarts the ack wait so it is not redelivered. Call well within the ack wait. */
  working(): void;
  /** Never deliver it again, to anyone. */
  term(): void;
}

/** A worker's pull consumer over its own queue and, unless told otherwise, its base's shared queue. */
export interface RequestPuller {
  /**
   * The next request, waiting as long as it takes; null once closed. Call it only with room to run the
   * request: a pulled request is this worker's until it acks, so pulling ahead starves other workers.
   */
  next(): Promise<Delivery<InferenceRequest> | null>;
  /**
   * Why this puller cannot take requests now, or null: on JetStream, a consumer that vanished (deleted, or
   * its stream deleted) and could not be created again for a few tries. It is tried again all along.
   */
  problem(): string | null;
  /** Stops pulling. Requests pulled but not acked go to another worker after their ack wait. */
  close(): Promise<void>;
}

export interface PullRequestsOptions {
  base: string;
  /** The worker whose queue (`infer.<base>.<workerId>`) to pull. */
  workerId: string;
  /**
   * Also pull the base's shared queue (`infer.<base>.any`); default true. A live worker adopts the queue of
   * a worker whose heartbeat expired by pulling that worker's id with `shared: false`.
   */
  shared?: boolean;
}

/**
 * A gateway's reply inbox for one request: token chunks in the order the worker sent them, then the Final,
 * after which iteration ends. Open it before publishing the request and put `subject` in `request.reply`.
 *
 * It also answers workers' claims (see Bus.claimReply): the first claimant is granted; a later claimant of
 * the same copy is granted only while no chunk has arrived (the earlier one is presumed dead: its delivery
 * was handed on). Once chunks went out, a later claim is refused and iteration fails with WorkerLostError,
 * so the client's stream ends with an error instead of duplicated text, and nothing is billed twice.
 *
 * A request the chosen worker does not take in time can be sent again as a copy with its own reply subject
 * (openCopy). The first copy claimed is the one served; every claim on another copy is refused, whoever
 * sends it, so two copies never both stream.
 *
 * If this process loses its connection to the broker, iteration fails with BusUnavailableError at once:
 * replies sent meanwhile are lost, so the reply could only come back with a gap.
 */
export interface ReplyInbox extends AsyncIterable<Reply> {
  readonly subject: string;
  /**
   * Resolves with the worker id of the first granted claim, or null once the inbox closes with none.
   * A gateway waits on it to tell a worker that took the request from one that has not (yet).
   */
  claimed(): Promise<string | null>;
  /** The reply subject the granted claim came to: `subject`, or a copy's (openCopy); null before any. */
  readonly claimedSubject: string | null;
  /** Closed: iteration has ended or will, and every later claim is refused. */
  readonly closed: boolean;
  /**
   * A second reply subject for a copy of the request (`{ ...request, reply }`), listening once it resolves.
   * Replies and claims sent to it reach this inbox under the rule above.
   */
  openCopy(): Promise<string>;
  /** Stops listening: iteration ends, and later claims find nobody (the worker drops the request). */
  close(): void;
  /** Ends the inbox with `error`: a waiting read and every later one reject with it; then as close(). */
  fail(error: Error): void;
}

/** A live subscription; close() stops its handler. */
export interface Subscription {
  close(): Promise<void>;
}

/**
 * This process is not connected to the broker right now (it keeps reconnecting). Thrown at once by
 * publishRequest, openReplyInbox and liveHeartbeats rather than after a timeout, and by an open reply
 * inbox's iteration.
 */
export class BusUnavailableError extends Error {
  override readonly name = "BusUnavailableError";
}

export interface Bus {
  /**
   * Queues a request for one worker, or for any worker of its base when `workerId` is "any" (ANY_WORKER).
   * The request id and reply subject make the message id: publishing it again within the dedupe window is
   * dropped, while a copy with another reply subject (ReplyInbox.openCopy) is a message of its own.
   * Rejects with BusUnavailableError while disconnected from the broker.
   */
  publishRequest(request: InferenceRequest, workerId: string): Promise<QueuedRequest>;
  pullRequests(options: PullRequestsOptions): Promise<RequestPuller>;
  /**
   * Requests of a base stored and not yet acked, on any of its queues: waiting (pending) plus pulled and
   * running (ack pending), since a worker acks only once a request finished. The autoscaler's queue lag.
   */
  requestBacklog(base: string): Promise<number>;
  /**
   * The workers of a base whose own queue holds requests (waiting, or pulled and not acked), live or not:
   * a worker starting up adopts the queues of those that are not (worker/orphan-queues.ts).
   */
  queuedWorkers(base: string): Promise<string[]>;

  openReplyInbox(): Promise<ReplyInbox>;
  /**
   * Asks the gateway waiting on `inbox` whether this worker may stream the reply. False when nobody waits
   * (the client left, the request was cancelled before it ran) or another worker's tokens already went out:
   * the worker then terms the request without running it.
   */
  claimReply(inbox: string, claim: ReplyClaim): Promise<boolean>;
  /**
   * Asked while a claimed request runs: whether its gateway still waits for the reply (the same claim,
   * granted again). False only when the inbox says nobody waits or nothing listens on it any more (its
   * gateway is gone); a slow answer says nothing either way, so true.
   */
  replyWanted(inbox: string, claim: ReplyClaim): Promise<boolean>;
  /** Sends a chunk or the Final to an inbox. Not stored: nobody listening means nobody needs it. */
  publishReply(inbox: string, reply: Reply): void;

  /**
   * Not stored: a cancel for a request not yet running is caught by the claim instead, and one published
   * while the connection is down may be lost on the way (see onReconnect).
   */
  publishCancel(base: string, cancel: Cancel): void;
  /**
   * Calls the listener each time the connection to the broker is back after a drop (the in-process bus
   * never drops). Cancels sent meanwhile may not have arrived: a worker asks at once whether each request
   * it runs is still wanted, rather than at its next periodic check.
   */
  onReconnect(listener: () => void): Subscription;
  /** Resolves once subscribed: a cancel published after that reaches the handler. */
  onCancel(base: string, handler: (cancel: Cancel) => void): Promise<Subscription>;

  /** Stores a usage event; the request id is the message id, so a retried publish is dropped. */
  publishUsage(event: UsageEvent): Promise<Published>;
  /**
   * Usage events stored and not yet acked by a meter: those not billed yet (a meter acks an event once its
   * row is committed). The meter's lag, for `luminet_usage_events_unbilled`.
   */
  usageBacklog(): Promise<number>;
  /**
   * The meter's durable consumer: each stored event reaches one handler (across processes), one at a time
   * per subscription, and is acked only after the handler resolves; a handler that throws sees it again.
   * On JetStream, a consumer (or stream) that vanishes is created again and consuming resumes, with what
   * the old one delivered but could not ack delivered again.
   */
  consumeUsage(handler: (event: UsageEvent) => Promise<void>): Promise<Subscription>;

  /** Records a worker's heartbeat; it disappears after the heartbeat TTL unless put again. */
  putHeartbeat(heartbeat: WorkerHeartbeat): Promise<void>;
  /** Takes a worker out of the live heartbeats at once (a drained worker leaving), not after the TTL. */
  removeHeartbeat(base: string, workerId: string): Promise<void>;
  /**
   * The latest heartbeat of every worker (of one base) seen within the heartbeat TTL. A heartbeat put by
   * another process shows up a network hop later. Rejects with BusUnavailableError while disconnected.
   */
  liveHeartbeats(base?: string): Promise<WorkerHeartbeat[]>;

  /** Stores an adapter control event; it replaces the adapter's previous one. */
  publishControl(event: AdapterControl): Promise<void>;
  /**
   * Calls the handler with the latest control event of every adapter of the base, then with each new one,
   * in order. A worker that starts late learns pins and deletions from this alone.
   */
  onControl(base: string, handler: (event: AdapterControl) => void): Promise<Subscription>;

  /** Closes every puller, inbox and subscription of this handle. Unacked deliveries are redelivered later. */
  close(): Promise<void>;
}

/** Settings both implementations share. Durations in milliseconds. */
export interface BusOptions {
  /** How long a pulled request stays with its worker without ack or working() before redelivery. */
  ackWaitMs?: number;
  /** Deliveries of one request before it is given up (a request that kills every worker it reaches). */
  maxDeliver?: number;
  /** How long a request id is remembered to drop a republished request. */
  requestDedupeWindowMs?: number;
  /** How long a usage event id is remembered to drop a duplicate. */
  usageDedupeWindowMs?: number;
  /** How long a usage event stays with a meter that has not acked it before redelivery. */
  usageAckWaitMs?: number;
  /** The delay before a usage event whose handler threw is delivered again. */
  usageRetryDelayMs?: number;
  /** How long a heartbeat stays live after it is put. */
  heartbeatTtlMs?: number;
  /** Receives what cannot be raised to a caller: an undecodable message, a handler that threw. */
  onError?: (error: Error) => void;
}

const busDefaults = {
  ackWaitMs: 30_000,
  maxDeliver: 5,
  requestDedupeWindowMs: 2 * 60_000,
  usageDedupeWindowMs: 10 * 60_000,
  usageAckWaitMs: 30_000,
  usageRetryDelayMs: 1_000,
  heartbeatTtlMs: 5_000,
} satisfies Required<Omit<BusOptions, "onError">>;

export type ResolvedBusOptions = Required<BusOptions>;

/** Fills in the defaults; errors nobody else can see go to the log. */
export function resolveBusOptions(options: BusOptions): ResolvedBusOptions {
  const defined = Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined));
  return {
    ...busDefaults,
    onError: (error) => logger.error({ err: error }, "bus"),
    ...defined,
  };
}

/**
 * A request's message id for the broker's dedupe: its id and reply subject, so a retried publish is
 * dropped while a copy sent to another reply subject (ReplyInbox.openCopy) is not.
 */
export function requestMessageId(request: InferenceRequest): string {
  return `${request.id}@${request.reply}`;
}

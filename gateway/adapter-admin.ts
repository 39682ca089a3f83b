// What the adapter admin API does to an org's adapters: create from a staged upload, list and get with
// where workers hold them now, set a version's traffic weight within its alias, pin and unpin (at most
// MAX_PINS per base, counted across orgs since workers' pins are shared), and delete. Every change drops
// the resolver's cached lookups for the org; pins and deletes also go to the base's workers as control
// events (the bus keeps the latest per adapter, so a worker that starts later learns them too).
import { and, count, eq, isNull, ne, type SQL, sql } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import type { AdapterObject, AdapterResidency } from "../schema/adapter-api.ts";
import { type Adapter, adapters, baseModels, orgs } from "../schema/db.ts";
import type { AdapterControl, WorkerHeartbeat } from "../schema/wire.ts";
import { WIRE_VERSION } from "../schema/wire.ts";
import { MAX_PINS } from "../worker/adapters/slots.ts";
import { wireAdapterName } from "./adapter-resolver.ts";
import type { StagedAdapter } from "./adapter-storage.ts";
import { reserveAdapterStorage } from "./adapter-storage-quota.ts";
import type { GatewayDeps } from "./deps.ts";
import { ApiError, invalidRequest } from "./errors.ts";
import { formatModelId } from "./model-id.ts";

export type AdminDeps = Pick<
  GatewayDeps,
  "db" | "bus" | "adapters" | "adapterStorage" | "log" | "now" | "limits"
>;

function adapterNotFound(org: string, name: string): ApiError {
  return new ApiError(
    404,
    "invalid_request_error",
    `No adapter named ${org}/${name}.`,
    "adapter_not_found",
    "name",
  );
}

function conflict(message: string, code: string, param = "name"): ApiError {
  return new ApiError(409, "invalid_request_error", message, code, param);
}

export function toAdapterObject(row: Adapter, heartbeats: readonly WorkerHeartbeat[]): AdapterObject {
  const wire = wireAdapterName(row.orgId, row.name);
  const resident: AdapterResidency[] = [];
  for (const beat of heartbeats) {
    if (beat.base !== row.base) continue;
    const tier = (["slot", "ram", "disk"] as const).find((t) => beat.adapters[t].includes(wire));
    if (tier) resident.push({ worker_id: beat.worker_id, tier });
  }
  return {
    id: `${row.orgId}/${row.name}`,
    object: "adapter",
    org: row.orgId,
    name: row.name,
    base: row.base,
    model: formatModelId(row.base, { org: row.orgId, name: row.name }),
    alias: row.alias,
    traffic_weight: row.trafficWeight,
    pinned: row.pinned,
    rank: row.rank,
    alpha: row.alpha,
    target_modules: row.targetModules,
    bytes: row.bytes,
    sha256: row.sha256,
    source: row.sourceUrl,
    status: row.status,
    created_at: Math.floor(row.createdAt.getTime() / 1000),
    resident,
  };
}

async function liveRow(deps: AdminDeps, org: string, name: string): Promise<Adapter> {
  const [row] = await deps.db
    .select()
    .from(adapters)
    .where(and(eq(adapters.orgId, org), eq(adapters.name, name), isNull(adapters.deletedAt)));
  if (!row) throw adapterNotFound(org, name);
  return row;
}

async function heartbeatsOf(deps: AdminDeps, bases: Iterable<string>): Promise<WorkerHeartbeat[]> {
  const beats = await Promise.all([...new Set(bases)].map((base) => deps.bus.liveHeartbeats(base)));
  return beats.flat();
}

/**
 * How many adapters a base's workers can pin: MAX_PINS, or fewer where a live worker has too few slots to
 * pin that many and keep one for the rest (`slots`: the smallest such worker's, else null). Every worker
 * pins every pinned adapter of its base, so the smallest decides.
 */
export function pinLimit(beats: readonly WorkerHeartbeat[]): { limit: number; slots: number | null } {
  const fewest = Math.min(...beats.map((beat) => beat.slots ?? Number.POSITIVE_INFINITY));
  return fewest - 1 < MAX_PINS
    ? { limit: Math.max(0, fewest - 1), slots: fewest }
    : { limit: MAX_PINS, slots: null };
}

function control(deps: AdminDeps, row: Adapter, kind: AdapterControl["kind"]): AdapterControl {
  const live = kind !== "delete" && row.sha256 !== null;
  return {
    v: WIRE_VERSION,
    kind,
    base: row.base,
    adapter: wireAdapterName(row.orgId, row.name),
    pinned: kind === "pin",
    blob: live ? { blob_key: row.blobKey, sha256: row.sha256!, rank: row.rank } : null,
    at: deps.now(),
  };
}

/** The base's architecture, or a 400 naming the base. */
export async function baseArchitecture(deps: AdminDeps, base: string) {
  const [row] = await deps.db.select().from(baseModels).where(eq(baseModels.name, base));
  if (!row) throw invalidRequest(`Unknown base model '${base}'.`, "base", "base_not_found");
  return row.architecture;
}

/**
 * Refuses a name already taken by a live adapter of the org, and a name or alias that would clash (below),
 * before any upload byte is read. createAdapter checks the clash again where it counts, under a lock.
 */
export async function assertNamesFree(
  deps: AdminDeps,
  org: string,
  name: string,
  alias: string | null,
): Promise<void> {
  const [row] = await deps.db
    .select({ id: adapters.id })
    .from(adapters)
    .where(and(eq(adapters.orgId, org), eq(adapters.name, name), isNull(adapters.deletedAt)));
  if (row) throw conflict(`An adapter named ${org}/${name} already exists.`, "adapter_exists");
  await refuseNameAliasClash(deps.db, org, name, alias);
}

/**
 * 409 when the new adapter's name is a live alias of the org (`alias_exists`), or its alias the name of a
 * live adapter of the org (`adapter_exists`): a model id BASE:ORG/X must mean one of the two, and the
 * resolver would run the adapter named X, never the alias's versions. Names and aliases of an org share
 * one namespace, across its bases, as names alone already do.
 */
async function refuseNameAliasClash(
  db: Pick<Db, "select">,
  org: string,
  name: string,
  alias: string | null,
): Promise<void> {
  const versions = await db
    .select({ name: adapters.name })
    .from(adapters)
    .where(and(eq(adapters.orgId, org), eq(adapters.alias, name), isNull(adapters.deletedAt)))
    .orderBy(adapters.name);
  if (versions.length > 0) {
    const list = versions.map((v) => `${org}/${v.name}`).join(", ");
    throw conflict(
      `${org}/${name} is already an alias (of ${list}); an adapter cannot take an alias's name, since its model id would then never reach the alias's versions. Choose another name.`,
      "alias_exists",
    );
  }
  if (alias === null) return;
  const [named] = await db
    .select({ id: adapters.id })
    .from(adapters)
    .where(and(eq(adapters.orgId, org), eq(adapters.name, alias), isNull(adapters.deletedAt)));
  if (named) {
    throw conflict(
      `An adapter named ${org}/${alias} already exists, so it cannot be an alias: its model id runs that adapter, never the alias's versions. Choose another alias.`,
      "adapter_exists",
      "alias",
    );
  }
}

export interface CreateAdapter {
  org: string;
  name: string;
  base: string;
  alias: string | null;
  staged: StagedAdapter;
  /** The registered URL it was fetched from; null for an upload. */
  source: string | null;
}

/**
 * Commits the staged upload to the blob store, then inserts its row as ready if its name and alias clash
 * with no live adapter of the org and the org's adapter storage has room for it (adapter-storage-quota.ts);
 * on any failure, neither stays.
 */
export async function createAdapter(deps: AdminDeps, input: CreateAdapter): Promise<AdapterObject> {
  const storage = deps.adapterStorage;
  if (!storage)
    throw new ApiError(503, "server_error", "This gateway has no adapter blob store.", "no_storage");
  const id = crypto.randomUUID();
  const blobKey = `adapters/${input.org}/${id}`;
  const { staged } = input;
  await staged.commit(blobKey);
  let row: Adapter | undefined;
  try {
    row = await deps.db.transaction(async (tx) => {
      // The org's creates check their names one at a time, each seeing the rows of those before it: two
      // at once cannot both pass, one naming an adapter X and the other giving an alias X. (A taken name
      // itself is refused by the unique index, below.)
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`luminet-adapter-names:${input.org}`}))`);
      await refuseNameAliasClash(tx, input.org, input.name, input.alias);
      await reserveAdapterStorage(tx, input.org, staged.bytes, deps.limits.maxOrgAdapterBytes);
      const [inserted] = await tx
        .insert(adapters)
        .values({
          id,
          orgId: input.org,
          name: input.name,
          base: input.base,
          alias: input.alias,
          rank: staged.rank,
          alpha: staged.alpha,
          targetModules: staged.targetModules,
          bytes: staged.bytes,
          sha256: staged.sha256,
          blobKey,
          sourceUrl: input.source,
          status: "ready",
        })
        .onConflictDoNothing()
        .returning();
      return inserted;
    });
  } catch (error) {
    await storage.remove(blobKey);
    throw error;
  }
  if (!row) {
    await storage.remove(blobKey);
    throw conflict(`An adapter named ${input.org}/${input.name} already exists.`, "adapter_exists");
  }
  deps.adapters.invalidate(input.org);
  // The worker its first request will go to starts loading it now. Only a head start: the adapter exists
  // either way, so a bus that refuses the event does not fail the create.
  await deps.bus
    .publishControl(control(deps, row, "create"))
    .catch((error: Error) =>
      deps.log.warn({ err: error, adapter: row.name }, "announcing a new adapter to the workers failed"),
    );
  return toAdapterObject(row, []);
}

export async function listAdapters(deps: AdminDeps, org: string): Promise<AdapterObject[]> {
  const rows = await deps.db
    .select()
    .from(adapters)
    .where(and(eq(adapters.orgId, org), isNull(adapters.deletedAt)))
    .orderBy(adapters.base, adapters.name);
  const beats = await heartbeatsOf(
    deps,
    rows.map((r) => r.base),
  );
  return rows.map((row) => toAdapterObject(row, beats));
}

export async function getAdapter(deps: AdminDeps, org: string, name: string): Promise<AdapterObject> {
  const row = await liveRow(deps, org, name);
  return toAdapterObject(row, await heartbeatsOf(deps, [row.base]));
}

export async function setTrafficWeight(
  deps: AdminDeps,
  org: string,
  name: string,
  weight: number,
): Promise<AdapterObject> {
  const row = await liveRow(deps, org, name);
  if (row.alias === null) {
    throw invalidRequest(
      `Adapter ${org}/${name} has no alias; a traffic weight splits an alias's requests among its versions (create it with an alias).`,
      "traffic_weight",
      "no_alias",
    );
  }
  const [updated] = await deps.db
    .update(adapters)
    .set({ trafficWeight: weight })
    .where(eq(adapters.id, row.id))
    .returning();
  deps.adapters.invalidate(org);
  return toAdapterObject(updated ?? row, await heartbeatsOf(deps, [row.base]));
}

export async function setPinned(
  deps: AdminDeps,
  org: string,
  name: string,
  pinned: boolean,
): Promise<AdapterObject> {
  const updated = await deps.db.transaction(async (tx) => {
    const [row] = await tx
      .select()
      .from(adapters)
      .where(and(eq(adapters.orgId, org), eq(adapters.name, name), isNull(adapters.deletedAt)))
      .for("update");
    if (!row) throw adapterNotFound(org, name);
    if (row.pinned === pinned) return row;
    if (pinned) {
      // Serializes pins of one base, so two at once cannot both take the last place.
      await tx.execute(sql`select pg_advisory_xact_lock(hashtext(${`luminet-pins:${row.base}`}))`);
      const pinned = await othersPinned(tx, row);
      await refuseOverOrgPinLimit(tx, row);
      const { limit, slots } = pinLimit(await deps.bus.liveHeartbeats(row.base));
      if (pinned >= limit) {
        throw conflict(
          slots === null
            ? `The base ${row.base} already has ${limit} pinned adapters, the most its workers hold; unpin one first.`
            : `The base ${row.base} already has ${pinned} pinned adapters, the most its workers hold: a worker with ${slots} slots pins ${limit}, one slot staying for the rest. Unpin one first, or start its workers with more --slots.`,
          "pin_limit",
        );
      }
    }
    const [changed] = await tx.update(adapters).set({ pinned }).where(eq(adapters.id, row.id)).returning();
    return changed ?? row;
  });
  await deps.bus.publishControl(control(deps, updated, pinned ? "pin" : "unpin"));
  return toAdapterObject(updated, await heartbeatsOf(deps, [updated.base]));
}

/**
 * 409 `org_pin_limit` when the adapter's org already has its pin limit's worth of adapters pinned on the
 * adapter's base (orgs.pin_limit, set by the operator); nothing when it has no limit. Runs under the base's
 * pin lock, so two pins at once cannot both take the org's last place.
 */
async function refuseOverOrgPinLimit(
  tx: Pick<Db, "select">,
  row: Pick<Adapter, "id" | "orgId" | "base">,
): Promise<void> {
  const [org] = await tx.select({ pinLimit: orgs.pinLimit }).from(orgs).where(eq(orgs.id, row.orgId));
  const limit = org?.pinLimit ?? null;
  if (limit === null) return;
  const own = await othersPinned(tx, row, eq(adapters.orgId, row.orgId));
  if (own >= limit) {
    throw conflict(
      `Your organization may have ${limit} adapter${limit === 1 ? "" : "s"} pinned on the base ${row.base} ` +
        `(its pin limit, set by the operator) and has ${own}; unpin one first.`,
      "org_pin_limit",
    );
  }
}

/** How many adapters other than `row` are pinned on its base (of those `within` picks, if given). */
async function othersPinned(
  tx: Pick<Db, "select">,
  row: Pick<Adapter, "id" | "base">,
  within?: SQL,
): Promise<number> {
  const [pins] = await tx
    .select({ n: count() })
    .from(adapters)
    .where(
      and(
        eq(adapters.base, row.base),
        eq(adapters.pinned, true),
        isNull(adapters.deletedAt),
        ne(adapters.id, row.id),
        within,
      ),
    );
  return pins?.n ?? 0;
}

/**
 * How to delete an adapter in use anyway, spelled out: DELETE /v1/models/{model} also refuses with these
 * messages and has no force of its own (OpenAI's has none), so "with force" alone would point nowhere.
 */
function withForce(org: string, name: string): string {
  return `delete it with force (luminet adapters delete ${org}/${name} --force, or DELETE /v1/adapters/${org}/${name}?force=true)`;
}

/**
 * Soft-deletes at once and tells the base's workers, which drop it from every tier and fail its requests;
 * the blob goes after that. An adapter still in use is refused unless `force`: pinned, or a version that
 * carries part of its alias's traffic while other versions remain.
 */
export async function deleteAdapter(
  deps: AdminDeps,
  org: string,
  name: string,
  force: boolean,
): Promise<void> {
  const row = await liveRow(deps, org, name);
  if (!force) {
    if (row.pinned) {
      throw conflict(
        `Adapter ${org}/${name} is pinned; unpin it first (luminet adapters set-pinned ${org}/${name} --off) or ${withForce(org, name)}.`,
        "adapter_in_use",
      );
    }
    if (row.alias !== null && row.trafficWeight > 0) {
      const [others] = await deps.db
        .select({ n: count() })
        .from(adapters)
        .where(
          and(
            eq(adapters.orgId, org),
            eq(adapters.alias, row.alias),
            isNull(adapters.deletedAt),
            ne(adapters.id, row.id),
          ),
        );
      if ((others?.n ?? 0) > 0) {
        throw conflict(
          `Adapter ${org}/${name} carries ${row.trafficWeight} of alias ${org}/${row.alias}'s traffic weight; set it to 0 first (luminet adapters set-traffic ${org}/${name} --weight 0) or ${withForce(org, name)}.`,
          "adapter_in_use",
        );
      }
    }
  }
  const [deleted] = await deps.db
    .update(adapters)
    .set({ status: "deleted", deletedAt: new Date(deps.now()), pinned: false })
    .where(and(eq(adapters.id, row.id), isNull(adapters.deletedAt)))
    .returning();
  if (!deleted) throw adapterNotFound(org, name);
  deps.adapters.invalidate(org);
  await deps.bus.publishControl(control(deps, deleted, "delete"));
  try {
    await deps.adapterStorage?.remove(row.blobKey);
  } catch (error) {
    // The row is gone and workers evicted it; a blob left behind costs storage, not correctness.
    deps.log.warn(
      { adapter: `${org}/${name}`, blobKey: row.blobKey, err: (error as Error).message },
      "adapter blob not removed",
    );
  }
}

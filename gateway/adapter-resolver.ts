// Which exact adapter a request runs with: the caller's org's ready adapter of that name on that base, or,
// when the name is an alias, one of the alias's versions drawn by traffic weight. Another org's adapter and
// an unknown one get the same 404 (existence is not revealed) and never fall back to the base model; an
// alias of the caller's own whose versions are all at weight 0 gets a 404 that says so. An org's adapter
// names and aliases never coincide (adapter-admin.ts refuses the create); where a database holds such a
// pair from before that check, the adapter with that exact name wins.
// Lookups are cached briefly per (org, base, name): the draw by weight happens per request on the cached rows.
import { and, eq, isNull, or } from "drizzle-orm";
import type { Db } from "../db/open.ts";
import { ADAPTER_NAME } from "../schema/adapter-api.ts";
import { adapters } from "../schema/db.ts";
import type { AdapterRef } from "../schema/wire.ts";
import type { Principal } from "./auth.ts";
import { aliasWithoutTraffic, modelNotFound } from "./errors.ts";
import type { ModelId } from "./model-id.ts";

/**
 * An adapter's name on the bus (requests, heartbeats, control events, usage): `<org>/<name>`, unique across
 * orgs, since workers, pins and residency are shared by every org on a base.
 */
export function wireAdapterName(orgId: string, name: string): string {
  return `${orgId}/${name}`;
}

interface Candidate {
  ref: AdapterRef;
  weight: number;
}

export interface AdapterResolverOptions {
  /** How long a lookup is reused; a deleted or re-weighted adapter takes effect within this. */
  cacheMs?: number;
  now?: () => number;
  /** A number in [0, 1) per draw; tests pass a fixed sequence. */
  random?: () => number;
  /** The most lookups kept; default 10,000. */
  maxEntries?: number;
}

export class AdapterResolver {
  readonly #cacheMs: number;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #maxEntries: number;
  readonly #cache = new Map<string, { candidates: Candidate[]; expiresAt: number }>();

  constructor(options: AdapterResolverOptions = {}) {
    this.#cacheMs = options.cacheMs ?? 5_000;
    this.#maxEntries = options.maxEntries ?? 10_000;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
  }

  /** Drops cached lookups, e.g. after the adapter admin API changed something. */
  invalidate(orgId?: string): void {
    if (orgId === undefined) this.#cache.clear();
    else for (const key of this.#cache.keys()) if (key.startsWith(`${orgId}\0`)) this.#cache.delete(key);
  }

  /** The adapter to run, or null for a bare base; throws model_not_found with `model` as the client wrote it. */
  async resolve(db: Db, caller: Principal, id: ModelId, model: string): Promise<AdapterRef | null> {
    if (id.adapter === null) return null;
    if (id.adapter.org !== caller.orgId) throw modelNotFound(model);
    // No adapter can have such a name: answered without a query, or a cache entry per name a client makes up.
    if (!ADAPTER_NAME.test(id.adapter.name)) throw modelNotFound(model);
    const candidates = await this.#candidates(db, caller.orgId, id.base, id.adapter.name);
    const exact = candidates.find((c) => c.ref.name === wireAdapterName(caller.orgId, id.adapter!.name));
    if (exact) return exact.ref;
    if (candidates.length === 0) throw modelNotFound(model);
    const chosen = this.#draw(candidates);
    if (!chosen) {
      const alias = wireAdapterName(caller.orgId, id.adapter.name);
      throw aliasWithoutTraffic(
        model,
        alias,
        candidates.map((c) => c.ref.name),
      );
    }
    return chosen.ref;
  }

  /** A weighted draw among versions with weight > 0; null when every version is switched off. */
  #draw(candidates: Candidate[]): Candidate | null {
    const live = candidates.filter((c) => c.weight > 0);
    const total = live.reduce((sum, c) => sum + c.weight, 0);
    let point = this.#random() * total;
    for (const candidate of live) {
      point -= candidate.weight;
      if (point < 0) return candidate;
    }
    return live.at(-1) ?? null;
  }

  async #candidates(db: Db, orgId: string, base: string, name: string): Promise<Candidate[]> {
    const key = `${orgId}\0${base}\0${name}`;
    const cached = this.#cache.get(key);
    if (cached && cached.expiresAt > this.#now()) return cached.candidates;
    const rows = await db
      .select()
      .from(adapters)
      .where(
        and(
          eq(adapters.orgId, orgId),
          eq(adapters.base, base),
          eq(adapters.status, "ready"),
          isNull(adapters.deletedAt),
          or(eq(adapters.name, name), eq(adapters.alias, name)),
        ),
      )
      .orderBy(adapters.createdAt, adapters.name);
    const candidates = rows.flatMap((row): Candidate[] =>
      // A ready row always has its sha256 (a check constraint); the guard keeps the type honest.
      row.sha256 === null
        ? []
        : [
            {
              ref: {
                name: wireAdapterName(orgId, row.name),
                blob_key: row.blobKey,
                sha256: row.sha256,
                rank: row.rank,
              },
              weight: row.trafficWeight,
            },
          ],
    );
    // Bounded: names a client makes up would otherwise grow it for good (an entry is dropped only when
    // its own name is looked up again). Map order is insertion order: the oldest goes first.
    this.#cache.delete(key);
    if (this.#cache.size >= this.#maxEntries) this.#cache.delete(this.#cache.keys().next().value!);
    this.#cache.set(key, { candidates, expiresAt: this.#now() + this.#cacheMs });
    return candidates;
  }
}

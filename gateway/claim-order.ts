// The order in which a batch runner takes due lines. Background responses go before Batch API lines: each
// is a live request that answers later, while a batch rides what capacity is left. Within each of the two
// tiers, orgs take turns, one line each per round, the org this runner served longest ago first; an org's
// own lines go oldest batch first, in line order. So one org's 50,000-line batch holds back neither another
// org's ten lines nor anyone's background response until it ends, and an org cannot get a bigger share by
// splitting its work into many batches. Turns are kept per runner, in memory: each gateway process is fair
// on its own.

export type ClaimTier = "background" | "batch";

/** An org with lines due in a tier, and when its oldest batch with due lines there was created. */
export interface DueOrg {
  orgId: string;
  tier: ClaimTier;
  oldest: Date;
}

/** Orgs whose last turn is remembered; past this the one served longest ago is forgotten (it then goes first). */
const MAX_REMEMBERED_ORGS = 10_000;

export class ClaimTurns {
  /** Org → the turn it was last served in; a Map keeps them in that order, so eviction drops the oldest. */
  readonly #lastServed = new Map<string, number>();
  #turn = 0;

  /**
   * The orgs in the order their lines go: background before batch, then within a tier never served or
   * served longest ago first, ties by their oldest batch.
   */
  order(due: readonly DueOrg[]): DueOrg[] {
    const turnOf = (org: DueOrg) => this.#lastServed.get(org.orgId) ?? 0;
    return [...due].sort(
      (a, b) =>
        Number(a.tier === "batch") - Number(b.tier === "batch") ||
        turnOf(a) - turnOf(b) ||
        a.oldest.getTime() - b.oldest.getTime(),
    );
  }

  /**
   * Candidate lines (each org's in the order it should run them) in the order to take them: tier by tier,
   * one line of each org per round, orgs in `ordered` order.
   */
  interleave<L extends { orgId: string; tier: ClaimTier }>(
    ordered: readonly DueOrg[],
    lines: readonly L[],
  ): L[] {
    const queues = ordered.map((org) => lines.filter((l) => l.orgId === org.orgId && l.tier === org.tier));
    const out: L[] = [];
    for (const tier of ["background", "batch"] as const) {
      const inTier = queues.filter((_, i) => ordered[i]!.tier === tier);
      for (let round = 0; inTier.some((queue) => round < queue.length); round++) {
        for (const queue of inTier) if (round < queue.length) out.push(queue[round]!);
      }
    }
    return out;
  }

  /**
   * Records that these orgs had their turn (their lines were looked at, claimed or left for a base without
   * room): they go after the others next time.
   */
  served(orgIds: Iterable<string>): void {
    for (const orgId of orgIds) {
      this.#lastServed.delete(orgId);
      this.#lastServed.set(orgId, ++this.#turn);
    }
    for (const orgId of this.#lastServed.keys()) {
      if (this.#lastServed.size <= MAX_REMEMBERED_ORGS) break;
      this.#lastServed.delete(orgId);
    }
  }
}

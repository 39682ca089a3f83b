// A database whose reads of one table wait until released: a test holds a batch runner between claiming a
// line and sending it (its read of the line's API key), does something there, then lets it go on. Reads
// inside a transaction and statements that are not awaited (subqueries) are not held.
import type { Table } from "drizzle-orm";
import type { Db } from "../../db/open.ts";

export function heldReads(db: Db, table: Table): { db: Db; reached: Promise<void>; release: () => void } {
  let reach = () => {};
  const reached = new Promise<void>((resolve) => {
    reach = resolve;
  });
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  /** A query builder whose awaiting waits for the release; its chained calls keep it held. */
  const held = <T extends object>(builder: T): T => {
    const proxy: T = new Proxy(builder, {
      get(target, key) {
        const value = Reflect.get(target, key, target) as unknown;
        if (key === "then") {
          return (onFulfilled?: (v: unknown) => unknown, onRejected?: (e: unknown) => unknown) => {
            reach();
            return released.then(() => (target as PromiseLike<unknown>).then(onFulfilled, onRejected));
          };
        }
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          const out = (value as (...a: unknown[]) => unknown).apply(target, args);
          return out === target ? proxy : out;
        };
      },
    });
    return proxy;
  };
  const wrapped = new Proxy(db, {
    get(target, key) {
      const value = Reflect.get(target, key, target) as unknown;
      if (key !== "select" || typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const builder = (value as (...a: unknown[]) => { from: (t: Table) => object }).apply(target, args);
        return new Proxy(builder, {
          get(b, k) {
            const from = Reflect.get(b, k, b) as unknown;
            if (k !== "from" || typeof from !== "function") return from;
            return (t: Table, ...rest: unknown[]) => {
              const out = (from as (...a: unknown[]) => object).apply(b, [t, ...rest]);
              return t === table ? held(out) : out;
            };
          },
        });
      };
    },
  });
  return { db: wrapped, reached, release };
}

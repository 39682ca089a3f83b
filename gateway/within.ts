// A promise raced against a clock, the timer cleared either way so a pending one never holds the process.

export const TIMED_OUT: unique symbol = Symbol("timed out");

/** What `promise` settles with, or TIMED_OUT when `ms` pass first; a rejection passes through. */
export function within<T>(promise: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

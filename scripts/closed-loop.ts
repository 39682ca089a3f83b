// A closed loop of benchmark clients: each of `concurrency` clients sends its next request as soon as its
// last one ended.

/** Runs `task(i)` for i < count with at most `concurrency` in flight, each slot taking the next index. */
export async function closedLoop(count: number, concurrency: number, task: (i: number) => Promise<void>) {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await task(next++);
    }),
  );
}

// The wait between a poller's looks for work: woken while asleep it returns at once, and a wake that came
// mid-pass makes the next sleep return at once, once.
import { expect, it } from "vitest";
import { Pause } from "../../gateway/pause.ts";

const within = (ms: number, promise: Promise<void>) =>
  Promise.race([promise.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

it("returns at once when woken while asleep, or when woken since its last sleep, and otherwise waits", async () => {
  const pause = new Pause();
  const asleep = pause.sleep(60_000);
  pause.wake();
  expect(await within(1_000, asleep)).toBe(true);

  pause.wake();
  expect(await within(1_000, pause.sleep(60_000))).toBe(true);
  // The kept wake was used: the next sleep waits its time.
  expect(await within(50, pause.sleep(200))).toBe(false);
});

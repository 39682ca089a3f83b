// A wait a loop can be woken from: a poller (the batch runner, the webhook sender) sleeps between looks
// for work, and stop() (or work that frees room, or new work) wakes it at once instead of leaving it asleep
// for the rest of its interval. A wake that comes while the loop is not asleep (mid-pass) is kept: its next
// sleep returns at once, so work queued during a pass is looked for without waiting out an interval.
export class Pause {
  #wake: (() => void) | null = null;
  #woken = false;

  /** Resolves after `ms`, or as soon as wake() is called (at once if it was called since the last sleep). */
  async sleep(ms: number): Promise<void> {
    if (this.#woken) {
      this.#woken = false;
      return;
    }
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = null;
    this.#woken = false;
  }

  wake(): void {
    if (this.#wake) this.#wake();
    else this.#woken = true;
  }
}

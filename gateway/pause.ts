// A wait a loop can be woken from: a poller (the batch runner, the webhook sender) sleeps between looks
// for work, and stop() (or work that frees room) wakes it at once instead of leaving it asleep for the rest
// of its interval.
export class Pause {
  #wake: (() => void) | null = null;

  /** Resolves after `ms`, or as soon as wake() is called. */
  async sleep(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wake = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wake = null;
  }

  wake(): void {
    this.#wake?.();
  }
}

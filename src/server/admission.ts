/**
 * Bounded concurrency with a bounded queue: at most `active` generations run at once, at most
 * `queued` wait (first come, first served), and a request beyond both is refused at once (503 with
 * Retry-After) instead of piling up. A waiting request whose client leaves gives up its place.
 */
import { ApiError } from './api-error.js';

export class Admission {
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(
    readonly maxActive: number,
    readonly maxQueued: number,
  ) {}

  get active(): number {
    return this.running;
  }
  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with a release function once a slot is free; rejects when the queue is full or `signal` fires. */
  acquire(signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.running < this.maxActive) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueued)
      return Promise.reject(
        new ApiError(
          503,
          'server_error',
          'server_overloaded',
          'the server is at capacity (all slots busy and the queue full); retry shortly',
          null,
          {
            'retry-after': '1',
          },
        ),
      );
    return new Promise((resolve, reject) => {
      const waiter = (): void => {
        signal.removeEventListener('abort', onAbort);
        resolve(this.releaser());
      };
      const onAbort = (): void => {
        const at = this.waiting.indexOf(waiter);
        if (at >= 0) this.waiting.splice(at, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    };
  }
}

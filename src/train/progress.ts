/**
 * Progress reporting for long work. On a terminal: one live line redrawn in place
 * (step/total, the caller's fields, throughput, ETA). Elsewhere (CI logs, pipes): a plain line
 * every `plainEvery` updates, so logs stay readable.
 */
export interface ProgressOptions {
  total: number;
  label: string;
  /** Where to write (stderr by default). */
  write: (text: string) => void;
  isTTY: boolean;
  /** Updates between plain lines when not on a terminal. */
  plainEvery?: number;
  /** Clock, injectable for tests. */
  now?: () => number;
}

export class Progress {
  private readonly start: number;
  private lastLength = 0;
  private updates = 0;
  constructor(private readonly opts: ProgressOptions) {
    this.start = (opts.now ?? Date.now)();
  }

  /** Reports that `done` of `total` are finished; `fields` are shown as key=value. */
  update(done: number, fields: Record<string, string | number> = {}): void {
    this.updates++;
    const { total, label, isTTY } = this.opts;
    const elapsed = ((this.opts.now ?? Date.now)() - this.start) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (total - done) / rate : NaN;
    const info = Object.entries(fields).map(([k, v]) => `${k} ${typeof v === 'number' ? formatNumber(v) : v}`);
    if (isTTY) {
      const width = 24;
      const filled = total > 0 ? Math.round((width * Math.min(done, total)) / total) : width;
      const bar = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
      const line = `${label} ${bar} ${done}/${total} ${info.join(' ')} eta ${formatDuration(eta)}`;
      this.opts.write(`\r${line}${' '.repeat(Math.max(0, this.lastLength - line.length))}`);
      this.lastLength = line.length;
    } else if (done === total || this.updates % (this.opts.plainEvery ?? 1) === 0) {
      this.opts.write(`${label} ${done}/${total} ${info.join(' ')} eta ${formatDuration(eta)}\n`);
    }
  }

  /** Ends the live line. */
  finish(): void {
    if (this.opts.isTTY && this.lastLength > 0) this.opts.write('\n');
    this.lastLength = 0;
  }
}

function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 1 ? v.toFixed(3) : v.toPrecision(3);
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '--';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : m > 0 ? `${m}m${String(sec).padStart(2, '0')}s` : `${sec}s`;
}

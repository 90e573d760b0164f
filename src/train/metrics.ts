/**
 * metrics.jsonl: one JSON object per line, appended as training goes. Each checkpoint records the
 * file's length after an fsync; resuming truncates the file to that length, so the rows always
 * describe exactly the steps the weights have seen (no rows from a lost stretch after a crash).
 */
import * as fsp from 'node:fs/promises';
import { asIOError } from '../io/atomic.js';
import { IOError } from '../errors.js';

export const METRICS_NAME = 'metrics.jsonl';

/** A training row, every `log_every` steps. Throughput counts training steps only (no eval, no checkpoint time). */
export interface TrainRow {
  step: number;
  loss: number;
  lr: number;
  grad_norm: number;
  samples_per_s?: number;
  tokens_per_s?: number;
  /** Wall seconds since the run started (summed over resumed sessions). */
  elapsed_s: number;
}

/** A step whose gradient had a NaN or Inf: the update was skipped. */
export interface SkippedRow {
  step: number;
  skipped: 'nonfinite_grad';
}

/** An evaluation row: classifiers report accuracy, language models bits_per_byte. */
export interface EvalRow {
  step: number;
  eval_loss: number;
  accuracy?: number;
  bits_per_byte?: number;
  elapsed_s: number;
}

export class MetricsLog {
  private constructor(
    readonly path: string,
    private readonly handle: fsp.FileHandle,
    private length: number,
  ) {}

  /** Opens (creating) the log and cuts it to `keepBytes` (0 for a fresh run). */
  static async open(path: string, keepBytes: number): Promise<MetricsLog> {
    let handle: fsp.FileHandle;
    try {
      handle = await fsp.open(path, 'a+');
      const st = await handle.stat();
      if (!st.isFile()) {
        await handle.close();
        throw new IOError(`${path} is not a regular file; move it away, or train into another --out`, { path });
      }
      const size = st.size;
      // A file shorter than the checkpoint says was edited by hand; keep what is there.
      const length = Math.min(size, keepBytes);
      if (size > length) await handle.truncate(length);
      return new MetricsLog(path, handle, length);
    } catch (err) {
      throw asIOError(err, path, 'open');
    }
  }

  /** Bytes written so far (what a checkpoint records). */
  get bytes(): number {
    return this.length;
  }

  async append(row: TrainRow | EvalRow | SkippedRow): Promise<void> {
    const line = Buffer.from(`${JSON.stringify(row)}\n`);
    try {
      await this.handle.write(line);
    } catch (err) {
      throw asIOError(err, this.path, 'write');
    }
    this.length += line.byteLength;
  }

  /** Makes the rows durable; called before each checkpoint records `bytes`. */
  async sync(): Promise<void> {
    await this.handle.sync().catch((err: unknown) => {
      throw asIOError(err, this.path, 'fsync');
    });
  }

  async close(): Promise<void> {
    await this.handle.close().catch(() => undefined);
  }
}

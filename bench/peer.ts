/**
 * The PyTorch peer process (bench/peer_torch.py) and one-core pinning, shared by the benches.
 * One long-lived python process answers one JSON request per line, so knobs and PyTorch can be
 * timed interleaved (A B A B …) in one run.
 */
import { type ChildProcessWithoutNullStreams, spawn, spawnSync } from 'node:child_process';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = dirname(fileURLToPath(import.meta.url));
/** The script lives in bench/ of the source tree (this file may run from dist/bench). */
function scriptPath(): string {
  const up = here.endsWith(join('dist', 'bench')) ? join(here, '..', '..', 'bench') : here;
  return join(up, 'peer_torch.py');
}

export const PYTHON = process.env.KNOBS_BENCH_PYTHON ?? '/usr/bin/python3';

export function haveTaskset(): boolean {
  return spawnSync('taskset', ['-V'], { encoding: 'utf8' }).status === 0;
}

/**
 * Runs a bench module again in a child node process (its `--child …` mode) with this process's node
 * flags, so the child's garbage collector runs as the parent's (`npm run bench` passes
 * --single-threaded-gc, as the knobs executable does) plus `nodeFlags`. A one-core row pins the child
 * to core 0 with one knobs thread. Returns the child's stdout; a failed child throws with `what` and
 * the last lines of its stderr.
 */
export function runBenchChild(what: string, args: string[], cores: 1 | 'all', nodeFlags: string[] = []): string {
  const env = { ...process.env, ...(cores === 1 ? { KNOBS_THREADS: '1' } : {}) };
  const node = [process.execPath, ...process.execArgv, ...nodeFlags, ...args];
  const r =
    cores === 1 && haveTaskset()
      ? spawnSync('taskset', ['-c', '0', ...node], { encoding: 'utf8', env })
      : spawnSync(node[0]!, node.slice(1), { encoding: 'utf8', env });
  if (r.status !== 0) throw new Error(`${what} failed: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

/** The PyTorch peer could not start: the bench must not report rows without it. */
export class PeerMissingError extends Error {
  constructor(why: string, stderr: string) {
    const missingModule = /No module named '([^']+)'/.exec(stderr)?.[1];
    const what = missingModule
      ? `the Python module '${missingModule}' that the PyTorch peer needs is not installed for ${PYTHON}`
      : `the PyTorch peer (${PYTHON} bench/peer_torch.py) failed to start: ${why}`;
    const detail = missingModule ? '' : stderr.trim().split('\n').slice(-2).join(' | ');
    super(
      `${what}${detail ? ` (${detail})` : ''}. Install the bench peers with \`scripts/setup.sh --bench\` ` +
        `(Debian packages python3-torch and python3-numpy), or point KNOBS_BENCH_PYTHON at a python3 that has them.`,
    );
    this.name = 'PeerMissingError';
  }
}

/**
 * How long a request waits, after a multi-threaded peer answers, before knobs' side is timed.
 * PyTorch's OpenBLAS worker threads keep spinning for ~0.1–0.2 s after a call before they sleep
 * (a 2-thread 512 GEMM left a whole core busy in the next 50 ms); a knobs measurement started in
 * that window shares its cores with them. Measured on the 2-core EPYC: gemm_f32_512 on all cores
 * read 0.49–0.59 of torch in 3 of 6 runs without the pause, 0.93–1.08 in 8 of 8 with it.
 */
const PEER_SETTLE_MS = 300;

export class TorchPeer {
  private constructor(
    private readonly proc: ChildProcessWithoutNullStreams,
    private readonly lines: Interface,
    readonly version: string,
    private readonly threads: number,
  ) {}

  private static pending = new WeakMap<TorchPeer, ((line: string) => void)[]>();

  /**
   * Starts the peer (pinned to core 0 for cores = 1). A bench row that names a peer must have one:
   * when python or torch is missing this throws PeerMissingError, which fails the whole run.
   */
  static async start(cores: 1 | 'all'): Promise<TorchPeer> {
    const script = scriptPath();
    const cmd = cores === 1 && haveTaskset() ? 'taskset' : PYTHON;
    const args = cores === 1 && haveTaskset() ? ['-c', '0', PYTHON, script] : [script];
    const proc = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    proc.stderr.on('data', (d: Buffer) => {
      if (stderr.length < 4096) stderr += d.toString();
    });
    const failed = new Promise<string>((resolve) => {
      proc.on('error', (e) => resolve(e.message));
      proc.on('exit', (code) => resolve(`exited with code ${code}`));
    });
    const lines = createInterface({ input: proc.stdout });
    const queue: ((line: string) => void)[] = [];
    lines.on('line', (l) => queue.shift()?.(l));
    const threads = cores === 1 ? 1 : cpus().length;
    const hello = new Promise<{ torch: string }>((resolve) =>
      queue.push((l) => resolve(JSON.parse(l) as { torch: string })),
    );
    proc.stdin.on('error', () => {}); // a peer that died before reading: reported through `failed`
    proc.stdin.write(JSON.stringify({ op: 'hello', threads }) + '\n');
    const first = await Promise.race([hello, failed]);
    if (typeof first === 'string') throw new PeerMissingError(first, stderr);
    const peer = new TorchPeer(proc, lines, `torch ${first.torch}`, threads);
    TorchPeer.pending.set(peer, queue);
    return peer;
  }

  async request<T>(req: Record<string, unknown>): Promise<T> {
    const queue = TorchPeer.pending.get(this)!;
    const answer = new Promise<string>((resolve) => queue.push(resolve));
    this.proc.stdin.write(JSON.stringify(req) + '\n');
    const res = JSON.parse(await answer) as T & { error?: string };
    if (res.error) throw new Error(`torch peer: ${res.error}`);
    if (this.threads > 1) await sleep(PEER_SETTLE_MS);
    return res;
  }

  close(): void {
    this.proc.stdin.end();
    this.lines.close();
  }
}

/**
 * Runs fn with this whole process pinned to core 0 (every thread, via taskset -a -p), then restores
 * the previous affinity. Without taskset it runs unpinned.
 */
export async function pinnedToCore0<T>(fn: () => Promise<T>): Promise<T> {
  const pid = String(process.pid);
  const before = spawnSync('taskset', ['-p', pid], { encoding: 'utf8' });
  const mask = before.status === 0 ? before.stdout.trim().split(':').pop()!.trim() : undefined;
  if (mask) spawnSync('taskset', ['-a', '-p', '1', pid]);
  try {
    return await fn();
  } finally {
    if (mask) spawnSync('taskset', ['-a', '-p', mask, pid]);
  }
}

/**
 * Child process of the inspect memory tests: `node inspect-rss.js BIG WARM` runs `inspect --stats`
 * on WARM (loads and compiles the code), then on BIG, and prints one JSON line: the resident set
 * before BIG, the peak resident set (VmHWM), and BIG's largest tensor in bytes.
 */
import { inspect } from '../../src/inspect/inspect.js';
import { readFileSync } from 'node:fs';

/** The high-water resident set of this process (Linux's VmHWM: getrusage's maxrss there counts the parent's too). */
function peakBytes(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
}

async function measure(big: string, warm: string): Promise<void> {
  await inspect(warm, { stats: true });
  const baseline = process.memoryUsage().rss;
  const report = await inspect(big, { stats: true });
  const peak = peakBytes();
  const largest = Math.max(...report.tensors.map((t) => t.bytes));
  process.stdout.write(`${JSON.stringify({ baseline, peak, largest, total: report.tensorBytes })}\n`);
}

// `npm test` loads every file under dist/test/, this one too, without arguments: then it does nothing.
const [big, warm] = process.argv.slice(2);
if (big && warm) await measure(big, warm);

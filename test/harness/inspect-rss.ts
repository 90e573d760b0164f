/**
 * Child process of the inspect memory tests: `node inspect-rss.js BIG WARM` runs `inspect --stats`
 * on WARM (loads and compiles the code), then on BIG, and prints one JSON line: the resident set
 * before BIG, the peak resident set (getrusage's maxrss), and BIG's largest tensor in bytes.
 */
import { inspect } from '../../src/inspect/inspect.js';

const [big, warm] = process.argv.slice(2);
await inspect(warm!, { stats: true });
const baseline = process.memoryUsage().rss;
const report = await inspect(big!, { stats: true });
const peak = process.resourceUsage().maxRSS * 1024;
const largest = Math.max(...report.tensors.map((t) => t.bytes));
process.stdout.write(`${JSON.stringify({ baseline, peak, largest, total: report.tensorBytes })}\n`);

/**
 * Child process of the GGUF load memory test: `node gguf-load-rss.js BIG WARM quantized|f32` loads
 * WARM (loads and compiles the code), then BIG, and prints one JSON line: the resident set before
 * BIG and the peak resident set while loading it (VmHWM, reset before BIG where Linux allows).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { loadGgufModel } from '../../src/models/gguf/load.js';

function peakBytes(): number {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) * 1024 : process.resourceUsage().maxRSS * 1024;
}

async function measure(big: string, warm: string, weights: 'quantized' | 'f32'): Promise<void> {
  await loadGgufModel(warm, { weights });
  const baseline = process.memoryUsage().rss;
  try {
    writeFileSync('/proc/self/clear_refs', '5'); // resets VmHWM to the current resident set
  } catch {
    // Without it the peak may include the warm-up's: the bound only gets harder to meet.
  }
  const loaded = await loadGgufModel(big, { weights });
  const peak = peakBytes();
  process.stdout.write(`${JSON.stringify({ baseline, peak, layers: loaded.model.namedModules().length })}\n`);
}

// `npm test` loads every file under dist/test/, this one too, without arguments: then it does nothing.
const [big, warm, weights] = process.argv.slice(2);
if (big && warm && (weights === 'quantized' || weights === 'f32')) await measure(big, warm, weights);
